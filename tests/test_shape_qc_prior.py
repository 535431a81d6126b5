"""The shape prior itself: decoder arithmetic, a tiny train + reconstruct round trip, determinism, saving, and the
coarse-to-fine decoding (cadsflow.shape_qc.model, train, reconstruct, sampling)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cadsflow.shape_qc.model import ShapeDecoder, load_prior, save_prior
from cadsflow.shape_qc.presets import load_preset
from cadsflow.shape_qc.reconstruct import coarse_to_fine, decode_on_grid, fit_latent, reconstruct
from cadsflow.shape_qc.sampling import boundary_voxels, prepare, sample_points
from cadsflow.shape_qc.score import volume_rng
from cadsflow.shape_qc.train import train_prior

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
TINY = load_preset("demo").with_overrides(
    latent_dim=8, hidden_width=32, num_layers=4, coord_layers=(0, 2), coord_scale_mm=10.0, points_per_example=1024,
    batch_size=3, epochs=50, lr_decoder=3e-3, recon_steps=40, recon_points=1024, decode_margin_mm=4.0,
    latent_reg_warmup=10)


def _two_structures(radius: float, offset: int) -> np.ndarray:
    """A ball (label 1) of `radius` voxels and a box (label 2) beside it, moved together by `offset` voxels."""
    grid = np.indices((22, 22, 22))
    labels = np.zeros((22, 22, 22), dtype=np.uint8)
    ball = ((grid - np.array([8 + offset, 11, 11])[:, None, None, None]) ** 2).sum(axis=0) <= radius**2
    labels[ball] = 1
    labels[13 + offset:17 + offset, 8:14, 8:14] = 2
    return labels


TRAINING = [(f"t{i}", _two_structures(r, o), AFFINE) for i, (r, o) in enumerate(
    [(3.0, 0), (3.5, 1), (4.0, -1), (4.5, 0), (5.0, 1), (4.0, 0)])]


@pytest.fixture(scope="module")
def tiny_prior():
    torch.set_num_threads(1)
    prior, stats = train_prior(TRAINING, 551, ["ball", "box"], TINY, seed=3)
    return prior, stats


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_decoder_equals_the_mlp_on_latent_and_coordinates_concatenated():
    torch.manual_seed(0)
    decoder = ShapeDecoder(latent_dim=5, hidden_width=7, num_layers=4, coord_layers=[0, 2], n_classes=3)
    z, x = torch.randn(2, 5), torch.randn(2, 9, 3)
    h = torch.relu(decoder.hidden[0](torch.cat([z[:, None, :].expand(-1, 9, -1), x], dim=-1)))
    h = h + torch.relu(decoder.hidden[1](h))  # layer 1: residual
    h = torch.relu(decoder.hidden[2](torch.cat([h, x], dim=-1)))  # layer 2: coordinates again, no residual
    expected = decoder.output(h)
    assert torch.allclose(decoder(z, x), expected, atol=1e-6)


def test_boundary_voxels_are_those_with_a_differing_six_neighbour():
    labels = np.zeros((5, 5, 5), dtype=np.uint8)
    labels[2, 2, 2] = 1
    marked = np.zeros(labels.size, dtype=bool)
    marked[boundary_voxels(labels)] = True
    expected = {(2, 2, 2), (1, 2, 2), (3, 2, 2), (2, 1, 2), (2, 3, 2), (2, 2, 1), (2, 2, 3)}
    assert {tuple(int(i) for i in np.unravel_index(f, labels.shape)) for f in np.flatnonzero(marked)} == expected


def test_sampled_points_carry_the_label_of_their_nearest_voxel_in_mm():
    labels = _two_structures(4.0, 0)
    vol = prepare(labels, AFFINE, scale_mm=10.0)
    coords, values = sample_points(vol, 500, 0.5, 1.5, np.random.default_rng(0))
    ijk = np.rint((coords * 10.0 + vol.centroid_mm) / 2.0).astype(int)  # back to voxels: mm / 2 mm spacing
    assert np.array_equal(labels[ijk[:, 0], ijk[:, 1], ijk[:, 2]], values)


def test_reconstruction_from_the_fitted_code_beats_the_mean_code(tiny_prior):
    prior, _ = tiny_prior
    target = _two_structures(4.8, -1)  # a subject the prior has not seen
    vol = prepare(target, AFFINE, prior.meta.coord_scale_mm)
    recon = reconstruct(prior, vol, TINY, volume_rng(0, "new"))
    mean_code = decode_on_grid(prior, prior.mean_latent, vol, TINY)
    assert recon.loss_final < recon.loss_initial
    for k in (1, 2):
        assert _dice(recon.labels == k, target == k) > _dice(mean_code == k, target == k)
        assert _dice(recon.labels == k, target == k) > 0.8


def test_training_improves_the_loss(tiny_prior):
    _, stats = tiny_prior
    assert stats.losses[-1] < 0.5 * stats.losses[0]


def test_training_is_deterministic_given_the_seed():
    short = TINY.with_overrides(epochs=3)
    a, _ = train_prior(TRAINING, 551, ["ball", "box"], short, seed=11)
    b, _ = train_prior(TRAINING, 551, ["ball", "box"], short, seed=11)
    c, _ = train_prior(TRAINING, 551, ["ball", "box"], short, seed=12)
    assert torch.equal(a.latents, b.latents)
    assert all(torch.equal(p, q) for p, q in zip(a.decoder.parameters(), b.decoder.parameters()))
    assert not torch.equal(a.latents, c.latents)


def test_fitting_the_same_volume_twice_gives_the_same_code(tiny_prior):
    prior, _ = tiny_prior
    vol = prepare(_two_structures(4.0, 0), AFFINE, prior.meta.coord_scale_mm)
    assert torch.equal(fit_latent(prior, vol, TINY, volume_rng(5, "v")), fit_latent(prior, vol, TINY,
                                                                                     volume_rng(5, "v")))


def test_a_saved_prior_decodes_exactly_as_before(tiny_prior, tmp_path):
    prior, _ = tiny_prior
    save_prior(prior, tmp_path / "prior.pt")
    loaded = load_prior(tmp_path / "prior.pt")
    vol = prepare(_two_structures(4.0, 0), AFFINE, prior.meta.coord_scale_mm)
    assert loaded.meta == prior.meta
    assert np.array_equal(decode_on_grid(loaded, loaded.mean_latent, vol, TINY),
                          decode_on_grid(prior, prior.mean_latent, vol, TINY))


def test_coarse_to_fine_decoding_equals_decoding_every_voxel(tiny_prior):
    prior, _ = tiny_prior
    vol = prepare(_two_structures(4.0, 1), AFFINE, prior.meta.coord_scale_mm)
    every = decode_on_grid(prior, prior.mean_latent, vol, TINY.with_overrides(decode_stride=1))
    coarse = decode_on_grid(prior, prior.mean_latent, vol, TINY.with_overrides(decode_stride=2))
    assert np.array_equal(every, coarse)


def test_coarse_to_fine_redecodes_the_neighbourhood_of_a_label_change_but_not_the_coarse_voxels():
    # One labelled coarse voxel (2, 2, 2) of a 5^3 coarse grid at stride 2: the coarse voxels 1..3 per axis see a
    # label change in their 3x3x3 neighbourhood, i.e. fine voxels 2..7 per axis (6^3 = 216); of these the 3^3 = 27
    # at even indices are coarse voxels, decoded already: 189 are decoded again.
    coarse = np.zeros((5, 5, 5), dtype=np.uint8)
    coarse[2, 2, 2] = 7
    fine, redo = coarse_to_fine(coarse, 2, (10, 10, 10))
    expected_fine = np.zeros((10, 10, 10), dtype=np.uint8)
    expected_fine[4:6, 4:6, 4:6] = 7
    expected_redo = np.zeros((10, 10, 10), dtype=bool)
    expected_redo[2:8, 2:8, 2:8] = True
    expected_redo[2:8:2, 2:8:2, 2:8:2] = False
    assert np.array_equal(fine, expected_fine)
    assert np.array_equal(redo, expected_redo)
    assert redo.sum() == 189


def test_coarse_to_fine_of_a_fine_grid_that_is_not_a_stride_multiple_repeats_the_last_coarse_voxel():
    coarse = np.arange(4, dtype=np.uint8).reshape(4, 1, 1)  # labels 0..3 along x, coarse x = 0, 3, 6, 9 at stride 3
    fine, redo = coarse_to_fine(coarse, 3, (11, 1, 1))
    assert fine[:, 0, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    assert redo[:, 0, 0].tolist() == [False, True, True] * 3 + [False, True]


def test_decoding_in_small_chunks_gives_the_labels_of_one_call(tiny_prior):
    prior, _ = tiny_prior
    vol = prepare(_two_structures(4.0, 1), AFFINE, prior.meta.coord_scale_mm)
    one_call = decode_on_grid(prior, prior.mean_latent, vol, TINY.with_overrides(decode_chunk=1 << 20))
    small = decode_on_grid(prior, prior.mean_latent, vol, TINY.with_overrides(decode_chunk=100))
    assert (one_call > 0).sum() > 100
    assert np.array_equal(one_call, small)


def test_a_file_that_is_not_a_prior_is_rejected_with_its_name(tmp_path):
    path = tmp_path / "prior.pt"
    torch.save({"something": 1}, path)
    with pytest.raises(ValueError, match="prior.pt: not a shape prior"):
        load_prior(path)


def _with_unknown_slab(labels: np.ndarray, unknown: int, start: int = 19) -> np.ndarray:
    """The map with its last slices (no structure there) marked `ignore`, as a sparse source's unannotated ends."""
    out = labels.copy()
    assert not out[start:].any()
    out[start:] = unknown
    return out


def test_unknown_voxels_of_a_training_map_are_no_structure_no_boundary_and_no_point():
    labels = _two_structures(4.0, 0)
    unknown = 3
    vol = prepare(_with_unknown_slab(labels, unknown), AFFINE, scale_mm=10.0, unknown=unknown)
    assert np.allclose(vol.centroid_mm, prepare(labels, AFFINE, scale_mm=10.0).centroid_mm)
    assert not np.any(vol.labels.ravel()[vol.boundary] == unknown)
    coords, values = sample_points(vol, 2000, 0.5, 1.5, np.random.default_rng(0))
    assert len(values) == 2000 and not np.any(values == unknown)
    ijk = np.clip(np.rint((coords * 10.0 + vol.centroid_mm) / 2.0).astype(int), 0, 21)
    assert np.array_equal(vol.labels[ijk[:, 0], ijk[:, 1], ijk[:, 2]], values)
    uniform_background = np.count_nonzero(values == 0)
    assert uniform_background > 0  # the known background is still sampled


def test_a_prior_trains_on_ground_truth_with_unknown_slices_and_reconstructs_the_known_structures():
    unknown = 3  # the `ignore` id of a two-structure group
    training = [(name, _with_unknown_slab(labels, unknown), affine) for name, labels, affine in TRAINING]
    prior, stats = train_prior(training, 551, ["ball", "box"], TINY, seed=3)
    assert prior.meta.known == [True, True] and stats.losses[-1] < 0.5 * stats.losses[0]
    target = _two_structures(4.8, -1)
    recon = reconstruct(prior, prepare(target, AFFINE, prior.meta.coord_scale_mm), TINY, volume_rng(0, "new"))
    for k in (1, 2):
        assert _dice(recon.labels == k, target == k) > 0.8


def test_the_ignore_id_is_refused_in_a_pseudo_label_and_accepted_in_ground_truth():
    from cadsflow.shape_qc.sampling import LabelMapError, check_label_map

    labels = _with_unknown_slab(_two_structures(4.0, 0), 3)
    with pytest.raises(LabelMapError, match=r"label values \[3\] are not label ids of the group \(1..2\)"):
        check_label_map(labels, AFFINE, 2, "pseudo.nii.gz")
    assert check_label_map(labels, AFFINE, 2, "gt.nii.gz", allow_ignore=True).max() == 3
    with pytest.raises(LabelMapError, match=r"\[4\].*1..2, 3 = ignore"):
        check_label_map(np.full((4, 4, 4), 4, np.uint8), AFFINE, 2, "gt.nii.gz", allow_ignore=True)


def test_the_prior_s_ignore_id_is_the_one_the_gt_stage_writes_for_every_group():
    from cadsflow.gt.mapping import ignore_label
    from cadsflow.labels import load_label_space
    from cadsflow.shape_qc.sampling import ignore_id

    space = load_label_space()
    for group in space.groups:
        assert ignore_id(len(space.group(group))) == ignore_label(group, space), group

"""Statistical ranking of the model flavors per structure (Online Methods 2.4, Algorithm 1).

algorithm: the tests, the points rule and the priority order of one structure; tables: the score table read and
the priority table written (results/ranking/priority.tsv); figure: the Fig. A.8-like selection chart.
"""

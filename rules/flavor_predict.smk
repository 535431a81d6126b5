# Stage: flavor_predict (skeleton; its rules land with their issue).


include: "flavor_predict_lookups.smk"

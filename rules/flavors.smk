# Stage: flavors (skeleton; its rules land with their issue).


include: "flavors_lookups.smk"

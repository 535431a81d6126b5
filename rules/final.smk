# Stage: final (skeleton; its rules land with their issue).


include: "final_lookups.smk"

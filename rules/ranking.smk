# Stage: ranking (skeleton; its rules land with their issue).


include: "ranking_lookups.smk"

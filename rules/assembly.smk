# Stage: assembly (skeleton; its rules land with their issue).


include: "assembly_lookups.smk"

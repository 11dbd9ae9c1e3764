"""What training minimises (docs/method.md, "Objective" and "Horizon curriculum and warm-ups"):
`losses` (the multi-resolution STFT, envelope and teacher-forcing terms, the kernel penalty),
`curriculum` (the horizon schedule and the loss weights' warm-ups) and `derivatives` (the
recording's first and second derivatives that teacher forcing and the initial state use)."""

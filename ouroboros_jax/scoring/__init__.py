"""How a model is judged (docs/method.md, "Evaluation"): `evaluation` (the cold-start rollout of
held-out vocalisations, the autonomy score that culling, selection and the test report use,
deployed generation) and `listening` (the lead-in level and onset delay a listener hears)."""

"""The closed-form cross-attention edit shared by UCE, RECE, TRCE stage 1 (and hardening): the batched float64
solver and the row builders."""

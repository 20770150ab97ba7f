"""Family ops: pure functions on head-split tensors `(B, H, L, K)`; no parameters."""

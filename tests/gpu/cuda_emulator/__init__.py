"""Runs the GPU code paths on the CPU for tests: the real kernels/*.cu compiled with g++ behind a
NumPy-backed stand-in for CuPy (fake_cupy).  See fake_cupy's docstring for what it checks."""

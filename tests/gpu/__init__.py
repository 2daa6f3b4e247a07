"""GPU tests (see conftest.py): real CuPy on a device, or the CPU kernel emulator."""

"""memnet-engine: a Caffe-compatible layer-graph engine for MemNet (NumPy CPU + CuPy GPU)."""
from setuptools import find_packages, setup

setup(
    name="memnet-engine",
    version="0.1.0",
    description="A faithful Caffe-style deep-learning engine to train and run MemNet (ICCV 2017)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The CUDA sources in kernels/ install as memnet_engine/kernels (memnet_engine.cuda.loader looks there,
    # then in the checkout's kernels/).
    packages=find_packages(include=["memnet_engine", "memnet_engine.*"]) + ["memnet_engine.kernels"],
    package_dir={"memnet_engine.kernels": "kernels"},
    package_data={"memnet_engine.core.proto": ["caffe.proto"], "memnet_engine.kernels": ["*.cu", "*.cuh"],
                  "memnet_engine.weights": ["*.caffemodel", "*.prototxt"]},  # the demo weights
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        # compiled CPU kernels: Winograd transforms (core/cpu/winograd.py), direct convolution (core/cpu/direct.py),
        # the fused BatchNorm+Scale+ReLU unit
        "numba>=0.59",
        "protobuf>=4.25,<8",  # caffe_pb2.py is protoc-25 code: see tools/gen_proto.py
        "pillow>=9.0",
        "h5py>=3.8",
        "tqdm>=4.60",
        "scikit-image>=0.19",  # its bundled photos are the default training set of tools/train.py
        "matplotlib>=3.5",  # the loss-curve plot written next to snapshots
    ],
    entry_points={"console_scripts": [
        "memnet-train = memnet_engine.cli.train:main",
        "memnet-restore = memnet_engine.cli.restore:main",
        "memnet-evaluate = memnet_engine.cli.evaluate:main",
        "memnet-convert = memnet_engine.cli.convert_weights:main",
        "memnet-make-net = memnet_engine.cli.make_memnet:main",
        "memnet-make-data = memnet_engine.cli.make_training_data:main",
        "memnet-precise-bn = memnet_engine.cli.precise_bn:main",
    ]},
    extras_require={
        "gpu": ["cupy-cuda12x>=13"],
        "gpu-cuda13": ["cupy-cuda13x>=14"],
        # ONNX export (tools/convert_weights.py ... model.onnx) and its check with onnxruntime on the CPU.
        "onnx": ["onnx>=1.14", "onnxruntime>=1.16"],
        # Data-parallel training (mpirun -np K): mpi4py with the MPICH library as a wheel; NCCL for GPU ranks
        # comes with CuPy's CUDA wheels (or nvidia-nccl-cu12/cu13).
        "mpi": ["mpi4py>=4", "mpich>=4"],
        # NVRTC without a GPU or driver, for tests/test_kernels_compile.py (one CUDA major version).
        "test": ["pytest>=7", "cuda-bindings>=13,<14", "nvidia-cuda-nvrtc>=13,<14", "onnx>=1.14", "onnxruntime>=1.16"],
        # tools/gen_proto.py: protoc 25, whose caffe_pb2.py imports on every protobuf runtime setup.py allows
        "dev": ["grpcio-tools>=1.62,<1.63"],
    },
)

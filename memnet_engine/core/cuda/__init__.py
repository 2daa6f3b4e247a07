"""GPU backend: hand-written CUDA kernels (``kernels/*.cu``) compiled with NVRTC through CuPy.

One module per kernel family wraps its launches (``activation``, ``batchnorm``, ``bn_scale_relu``, ``copy``,
``eltwise``, ``im2col``, ``loss``, ``reduce``, ``scale_bias``, ``sgd``); ``gemm`` calls cuBLAS.
Nothing here imports CuPy until a kernel is used, so CPU-only installs can import the package.

On a GPU net (``Net(..., device="gpu")`` or ``"gpu:1"``) blob ``data``/``diff`` are CuPy arrays;
``blob.host_data()`` / ``blob.host_diff()`` and ``memnet_engine.to_numpy(array)`` give NumPy copies.
To put host data in, use ``net.forward(data=image)`` or ``blob.data[...] = blob.xp.asarray(image)``:
CuPy refuses ``device_array[...] = numpy_array`` ("non-scalar numpy.ndarray cannot be used for fill").
"""

"""Code generation: the analysed graph -> a plan of specialised OpenCL kernels and launches."""

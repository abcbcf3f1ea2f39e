"""Running generated code: OpenCL devices, program builds and caching, execution, checks."""

// opc's CPU-debug launcher for its AscendC model (see kernel_operator.h): the names of the
// CANN CPU-debug flow (`ICPU_RUN_KF`, `AscendC::SetKernelMode`), written for opc.
#pragma once

#include "kernel_operator.h"

// Run kernel `func` on `blockDim` cores (or MIX groups): one host thread per core.
#define ICPU_RUN_KF(func, blockDim, ...) AscendC::detail::RunKernel((blockDim), [&]() { func(__VA_ARGS__); })

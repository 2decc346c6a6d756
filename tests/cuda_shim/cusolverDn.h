// Compile-check shim: see cublas_v2.h in this folder (handle type only).
#pragma once
#include <cusolver_common.h>
typedef struct cusolverDnContext* cusolverDnHandle_t;

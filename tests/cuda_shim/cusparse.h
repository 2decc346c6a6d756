// Compile-check shim: see cublas_v2.h in this folder (handle and status types only).
#pragma once
typedef struct cusparseContext* cusparseHandle_t;
typedef enum { CUSPARSE_STATUS_SUCCESS = 0 } cusparseStatus_t;

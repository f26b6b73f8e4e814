#pragma once

// For a fuzz target whose inputs reach libhdf5, which the reader runs in a forked child (formats/keras.h);
// include it in that target's one source file.
//  - A failed allocation there is libhdf5's error to report (it asks for 2^46-byte buffers on some damaged
//    files); in the target itself a failed allocation still ends the run (std::bad_alloc escapes).
//  - The program caps a child's address space (kChildHeadroom in formats/keras.cpp, 1 GiB beyond its start
//    for reading a file's structure), which ASan's shadow memory rules out; here an allocation above 1 GiB
//    fails instead, as it would there. Without it, libhdf5's 4 GiB requests in a child met libFuzzer's
//    malloc limit, which wrote each as an oom-* artifact of the target.
//  - libhdf5 loops forever on some damaged files; the reader kills its child after 60 s without progress,
//    which would make each such input a libFuzzer timeout. Two seconds is ample for the small inputs here.
//  - A crash in the child is the reader's designed outcome, not a finding (quietForkedChildren).

#include "formats/keras.h"
#include "fuzz_common.h"

#include <chrono>

extern "C" const char* __asan_default_options() {
    return "allocator_may_return_null=1:max_allocation_size_mb=1024";
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    ckpt::setHdf5ReaderTimeout(std::chrono::seconds(2));
    ckpt::fuzz::quietForkedChildren();
    return 0;
}

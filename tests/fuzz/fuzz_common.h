#pragma once

// What every fuzz target does with a checkpoint that opened: both JSON reports, and statistics of every
// tensor small enough to keep one run fast (the reading code is the same for the larger ones). A clean
// ckpt::Error from a tensor is an expected outcome; anything else (a crash, a sanitizer report, another
// exception escaping) is a finding.

#include "analysis/stats.h"
#include "io/error.h"
#include "io/mappedfile.h"
#include "model/checkpoint.h"
#include "report/report.h"

#include <cstdint>
#include <string>

namespace ckpt::fuzz {

inline void exercise(const CheckpointPtr& ck, const std::string& name) {
    (void)dumpJson(infoJson(*ck, name));
    (void)dumpJson(lsJson(*ck, name, ""));
    for (const auto& t : ck->tensors) {
        if (t.numel() > (1u << 20))
            continue;
        try {
            (void)computeStats(ck, t, 8);
        } catch (const Error&) {
        }
    }
}

inline std::shared_ptr<const MappedFile> buffer(const char* name, const std::uint8_t* data,
                                                std::size_t size) {
    return MappedFile::fromBuffer(name, std::string(reinterpret_cast<const char*>(data), size));
}

} // namespace ckpt::fuzz

#pragma once

// What every fuzz target does with a checkpoint that opened: both JSON reports, statistics of every tensor
// small enough to keep one run fast (the reading code is the same for the larger ones), and the plan and
// layout of an export of everything to each format (what `ckpt export --dry-run` and the export dialog's
// preview compute: selection, names, the safetensors header). A clean ckpt::Error is an expected outcome;
// anything else (a crash, a sanitizer report, another exception escaping) is a finding.

#include "analysis/stats.h"
#include "export/exporter.h"
#include "export/exportplan.h"
#include "io/error.h"
#include "io/mappedfile.h"
#include "model/checkpoint.h"
#include "report/report.h"

#include <csignal>
#include <cstdint>
#include <pthread.h>
#include <sanitizer/common_interface_defs.h>
#include <string>

namespace ckpt::fuzz {

// libhdf5 runs in forked children (formats/keras.h) because it is not hardened: a crash there is the
// reader's designed outcome (an error for the file, which the target then exercises), not a finding. A child
// inherits libFuzzer's death callback and crash handlers, which would write it down as a crash-* artifact of
// the target; children forget them here and just die. Call from LLVMFuzzerInitialize.
inline void quietForkedChildren() {
    pthread_atfork(nullptr, nullptr, [] {
        __sanitizer_set_death_callback(nullptr);
        for (int s : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE})
            std::signal(s, SIG_DFL);
    });
}

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
    for (const ExportFormat format : {ExportFormat::Torch, ExportFormat::Safetensors}) {
        ExportOptions options;
        options.format = format;
        options.keepValues = true;
        try {
            (void)describeExport(*ck, buildExportPlan(*ck, options), options);
        } catch (const Error&) {
        }
    }
}

inline std::shared_ptr<const MappedFile> buffer(const char* name, const std::uint8_t* data,
                                                std::size_t size) {
    return MappedFile::fromBuffer(name, std::string(reinterpret_cast<const char*>(data), size));
}

} // namespace ckpt::fuzz

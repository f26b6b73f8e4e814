// libFuzzer target: bytes as a TensorFlow bundle's .index table (footer, blocks, Snappy, entries), with the
// same bytes standing in for every data shard, so that entries, string tensors and the object graph are
// decoded too. Block checksums are not verified, so that mutations reach the parsers behind them. Then
// listing and statistics of every tensor. Anything but a clean ckpt::Error or a result is a finding.

#include "analysis/stats.h"
#include "formats/tfbundle.h"
#include "io/error.h"
#include "report/report.h"

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string bytes(reinterpret_cast<const char*>(data), size);
    try {
        const auto index = ckpt::MappedFile::fromBuffer("fuzz.index", bytes);
        ckpt::CheckpointPtr ck = ckpt::readTfBundle(
            index, "fuzz", [&](const std::string& path) { return ckpt::MappedFile::fromBuffer(path, bytes); },
            /*verifyChecksums=*/false);
        (void)ckpt::dumpJson(ckpt::infoJson(*ck, "fuzz.index"));
        (void)ckpt::dumpJson(ckpt::lsJson(*ck, "fuzz.index", ""));
        for (const auto& t : ck->tensors) {
            if (t.numel() > (1u << 20))
                continue;
            try {
                (void)ckpt::computeStats(ck, t, 8);
            } catch (const ckpt::Error&) {
            }
        }
    } catch (const ckpt::Error&) {
    }
    return 0;
}

// libFuzzer target: bytes as a Hugging Face sharded index (model.safetensors.index.json) in a folder that
// holds two small safetensors shards, a.safetensors and b.safetensors; then the merged checkpoint's reports
// and statistics. The index is read from a file because the reader opens its shards beside it.

#include "formats/shardindex.h"
#include "fuzz_common.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace {

std::string shard(const std::string& header, const std::string& bytes) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i)
        out[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    return out + header + bytes;
}

void writeFile(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

const std::string& folder() {
    static const std::string dir = [] {
        char tmpl[] = "/tmp/ckpt_fuzz_shards_XXXXXX";
        const char* d = mkdtemp(tmpl);
        if (!d)
            std::abort();
        const std::string f1(reinterpret_cast<const char*>("\0\0\x80?\0\0\0@"), 8); // 0, 1, 2 as floats
        writeFile(std::string(d) + "/a.safetensors",
                  shard(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f1));
        writeFile(std::string(d) + "/b.safetensors",
                  shard(R"({"v":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},)"
                        R"("__metadata__":{"format":"pt"}})",
                        std::string("\0<\0@\0B\0D", 8)));
        return std::string(d);
    }();
    return dir;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string index = folder() + "/model.safetensors.index.json";
    writeFile(index, std::string(reinterpret_cast<const char*>(data), size));
    try {
        if (auto ck = ckpt::tryOpenShardIndex(index))
            ckpt::fuzz::exercise(ck, index);
    } catch (const ckpt::Error&) {
    }
    return 0;
}

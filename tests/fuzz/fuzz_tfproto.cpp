// libFuzzer target for the TensorFlow protobuf decoding behind a valid table: the input is
//   u16 n, n bytes of a BundleEntryProto, then the rest: a TrackableObjectGraph.
// The target writes a correct LevelDB table (with checksums) holding the bundle header, the entry under
// the key "a", and a DT_STRING entry _CHECKPOINTABLE_OBJECT_GRAPH whose one string, in the data shard, is the
// object graph. So every input reaches BundleEntryProto, TensorShapeProto and the object graph parsers,
// which fuzz_tfindex reaches only through mutations of the table around them.

#include "formats/tfbundle.h"
#include "fuzz_common.h"

#include <string>

namespace {

void varint(std::string& out, std::uint64_t v) {
    while (v >= 0x80) {
        out += static_cast<char>((v & 0x7f) | 0x80);
        v >>= 7;
    }
    out += static_cast<char>(v);
}

void fixed32(std::string& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i)
        out += static_cast<char>((v >> (8 * i)) & 0xff);
}

std::uint32_t crc(const std::string& s) {
    return ckpt::crc32c({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()});
}

void entry(std::string& block, const std::string& key, const std::string& value) {
    varint(block, 0);
    varint(block, key.size());
    varint(block, value.size());
    block += key;
    block += value;
}

// A block with its restart array and trailer (type 0: uncompressed, masked CRC-32C of block + type).
std::string finishBlock(std::string block) {
    fixed32(block, 0);
    fixed32(block, 1);
    std::string trailer(1, '\0');
    fixed32(trailer, ckpt::maskCrc32c(crc(block + '\0')));
    return block + trailer;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2)
        return 0;
    const std::size_t n = std::min<std::size_t>(data[0] | (data[1] << 8), size - 2);
    const std::string entryProto(reinterpret_cast<const char*>(data + 2), n);
    const std::string graph(reinterpret_cast<const char*>(data + 2 + n), size - 2 - n);

    // Data shard: the graph as a one-element string tensor (varint length, masked CRC of the length as u32,
    // the bytes), then 4 KiB of zeros for whatever the fuzzed entry points at.
    std::string shard;
    varint(shard, graph.size());
    std::string len32;
    fixed32(len32, static_cast<std::uint32_t>(graph.size()));
    fixed32(shard, ckpt::maskCrc32c(crc(len32)));
    shard += graph;
    const std::size_t graphBytes = shard.size();
    shard.append(4096, '\0');

    std::string header, version, graphEntry, shape;
    varint(header, 1 << 3); // num_shards = 1
    varint(header, 1);
    varint(version, 1 << 3); // producer = 1
    varint(version, 1);
    header += static_cast<char>(3 << 3 | 2);
    varint(header, version.size());
    header += version;
    varint(graphEntry, 1 << 3); // dtype = DT_STRING
    varint(graphEntry, 7);
    varint(graphEntry, 2 << 3 | 2); // shape {} (a scalar)
    varint(graphEntry, 0);
    varint(graphEntry, 5 << 3); // size
    varint(graphEntry, graphBytes);

    std::string block;
    entry(block, "", header);
    entry(block, "_CHECKPOINTABLE_OBJECT_GRAPH", graphEntry);
    entry(block, "a", entryProto);
    const std::string dataBlock = finishBlock(block);
    const std::string meta = finishBlock({});
    std::string index;
    std::string handle;
    varint(handle, 0);
    varint(handle, dataBlock.size() - 5);
    entry(index, "b", handle);
    const std::string indexBlock = finishBlock(index);

    std::string table = dataBlock + meta + indexBlock;
    std::string footer;
    varint(footer, dataBlock.size()); // metaindex handle
    varint(footer, meta.size() - 5);
    varint(footer, dataBlock.size() + meta.size()); // index handle
    varint(footer, indexBlock.size() - 5);
    footer.resize(40, '\0');
    fixed32(footer, 0x8b80fb57u);
    fixed32(footer, 0xdb477524u);
    table += footer;

    try {
        const auto ck = ckpt::readTfBundle(
            ckpt::MappedFile::fromBuffer("fuzz.index", table), "fuzz",
            [&](const std::string& path) { return ckpt::MappedFile::fromBuffer(path, shard); });
        ckpt::fuzz::exercise(ck, "fuzz.index");
    } catch (const ckpt::Error&) {
    }
    return 0;
}

#include "loader.h"

#include "io/error.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <vector>

namespace ckpt {
namespace {

struct PluginState {
    std::once_flag once;
    ckpt_stats_api api{};
    bool loaded = false;
    std::string info;
    std::atomic<const ckpt_stats_api*> published{nullptr}; // set once loaded
};

PluginState& state() {
    static PluginState s;
    return s;
}

std::string executableDir() {
    std::vector<char> buf(4096);
    const ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
    if (n <= 0)
        return {};
    std::string path(buf.data(), static_cast<std::size_t>(n));
    const auto slash = path.rfind('/');
    return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

// Tries one candidate; on success fills `api` and returns true, else appends the reason to `info`.
bool tryLoad(const std::string& path, ckpt_stats_api& api, std::string& info) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) {
        info += path + ": not found\n";
        return false;
    }
    dlerror();
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char* e = dlerror();
        info += path + ": " + (e ? e : "dlopen failed") + "\n";
        return false;
    }
    auto version = reinterpret_cast<ckpt_stats_abi_version_fn>(dlsym(handle, "ckpt_stats_abi_version"));
    auto compute = reinterpret_cast<ckpt_stats_compute_fn>(dlsym(handle, "ckpt_stats_compute"));
    if (!version || !compute) {
        info += path + ": not a statistics plugin (missing entry points)\n";
        dlclose(handle);
        return false;
    }
    if (const int v = version(); v != CKPT_STATS_ABI_VERSION) {
        info += path + ": ABI version " + std::to_string(v) + ", expected " +
                std::to_string(CKPT_STATS_ABI_VERSION) + "\n";
        dlclose(handle);
        return false;
    }
    // Never dlclose'd: LibTorch does not unload cleanly.
    api.abi_version = version;
    api.compute = compute;
    return true;
}

void load(PluginState& s) {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("CKPT_TORCHSTATS"); env && *env) {
        const std::string v(env);
        if (v == "off" || v == "0" || v == "none") {
            s.info = "disabled by CKPT_TORCHSTATS=" + v;
            return;
        }
        candidates.push_back(v);
    }
    const std::string exe = executableDir();
    if (!exe.empty()) {
        candidates.push_back(exe + "/../lib/" CKPT_STATS_PLUGIN_NAME);
        candidates.push_back(exe + "/../lib/checkpoint-browser/" CKPT_STATS_PLUGIN_NAME);
#ifdef CKPT_TORCHSTATS_INSTALL_LIBDIR
        candidates.push_back(exe + "/../" CKPT_TORCHSTATS_INSTALL_LIBDIR "/" CKPT_STATS_PLUGIN_NAME);
#endif
        candidates.push_back(exe + "/" CKPT_STATS_PLUGIN_NAME);
    }
    std::string reasons;
    for (const auto& c : candidates)
        if (tryLoad(c, s.api, reasons)) {
            s.loaded = true;
            s.info = c;
            return;
        }
    s.info = candidates.empty() ? std::string("no place to look for " CKPT_STATS_PLUGIN_NAME) : reasons;
    if (!s.info.empty() && s.info.back() == '\n')
        s.info.pop_back();
}

bool pluginDtype(DType t) {
    return t == DType::Float32 || t == DType::Float64 || t == DType::Float16 || t == DType::BFloat16;
}

struct ProgressBridge {
    const ProgressFn* fn = nullptr;
    std::exception_ptr error;
};

int progressBridge(void* ctx, std::uint64_t done, std::uint64_t total) {
    auto* b = static_cast<ProgressBridge*>(ctx);
    try {
        return (*b->fn)(done, total) ? 1 : 0;
    } catch (...) { // never across the C ABI: rethrown once the plugin has returned
        b->error = std::current_exception();
        return 0;
    }
}

} // namespace

const ckpt_stats_api* torchStatsPlugin() {
    PluginState& s = state();
    std::call_once(s.once, [&s] {
        load(s);
        if (s.loaded)
            s.published.store(&s.api, std::memory_order_release);
    });
    return s.loaded ? &s.api : nullptr;
}

const ckpt_stats_api* torchStatsPluginIfLoaded() {
    return state().published.load(std::memory_order_acquire);
}

const std::string& torchStatsPluginInfo() {
    torchStatsPlugin();
    return state().info;
}

std::string torchStatsIneligibility(const CheckpointPtr& checkpoint, const TensorInfo& tensor) {
    if (!checkpoint)
        return "no checkpoint";
    if (!tensor.error.empty())
        return "the tensor is unreadable";
    if (tensor.layout != Layout::Strided)
        return "not a strided tensor";
    if (tensor.quant.scheme != QuantInfo::Scheme::None)
        return "quantized";
    if (!pluginDtype(tensor.dtype))
        return "dtype not handled by the plugin";
    if (tensor.strides.size() != tensor.shape.size() || !tensor.isContiguous())
        return "not contiguous";
    if (tensor.storageOffset < 0)
        return "negative storage offset";
    if (tensor.storage < 0 || static_cast<std::size_t>(tensor.storage) >= checkpoint->storages.size())
        return "no storage";
    const StorageInfo& s = checkpoint->storages[static_cast<std::size_t>(tensor.storage)];
    if (s.bigEndian)
        return "big-endian storage";
    if (!s.error.empty())
        return "the storage is unreadable";
    if (s.source < 0 || static_cast<std::size_t>(s.source) >= checkpoint->sources.size() ||
        !checkpoint->sources[static_cast<std::size_t>(s.source)].file)
        return "no source file";
    const MappedFile& file = *checkpoint->sources[static_cast<std::size_t>(s.source)].file;
    const std::uint64_t elsize = dtypeSize(tensor.dtype);
    const std::uint64_t numel = tensor.numel();
    const auto offset = static_cast<std::uint64_t>(tensor.storageOffset);
    const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    if (offset > max / elsize || numel > max / elsize)
        return "too large";
    const std::uint64_t begin = offset * elsize, bytes = numel * elsize;
    if (s.fileOffset > file.size() || s.nbytes > file.size() - s.fileOffset || begin > s.nbytes ||
        bytes > s.nbytes - begin)
        return "outside its storage or file";
    return {};
}

std::optional<TensorStats> computeStatsFast(const CheckpointPtr& checkpoint, const TensorInfo& tensor,
                                            int bins, const ProgressFn& progress) {
    const std::uint64_t numel = tensor.numel();
    if (numel < kTorchStatsMinElements || (numel < kTorchStatsLoadElements && !torchStatsPluginIfLoaded()))
        return computeStats(checkpoint, tensor, bins, progress);
    return computeStatsWithPlugin(checkpoint, tensor, bins, progress);
}

std::optional<TensorStats> computeStatsWithPlugin(const CheckpointPtr& checkpoint, const TensorInfo& tensor,
                                                  int bins, const ProgressFn& progress, bool* byPlugin) {
    if (byPlugin)
        *byPlugin = false;
    if (!torchStatsIneligibility(checkpoint, tensor).empty())
        return computeStats(checkpoint, tensor, bins, progress);
    const ckpt_stats_api* api = torchStatsPlugin();
    if (!api)
        return computeStats(checkpoint, tensor, bins, progress);

    const StorageInfo& s = checkpoint->storages[static_cast<std::size_t>(tensor.storage)];
    const MappedFile& file = *checkpoint->sources[static_cast<std::size_t>(s.source)].file;
    // As TensorReader does: the file must still be what was opened (Error(Changed) otherwise), before the
    // values are read and after.
    file.ensureReadable(tensor.name);
    verifyStorageChecksum(checkpoint, tensor); // as TensorReader does before the first value

    const std::size_t n = static_cast<std::size_t>(std::max(bins, 1));
    std::vector<double> edges(n + 1);
    std::vector<std::uint64_t> counts(n);
    ProgressBridge bridge{&progress, nullptr};
    ckpt_stats_input in{};
    in.data = file.data() + s.fileOffset +
              static_cast<std::uint64_t>(tensor.storageOffset) * dtypeSize(tensor.dtype);
    in.dtype = static_cast<int>(tensor.dtype);
    in.numel = tensor.numel();
    in.bins = static_cast<int>(n);
    in.progress = progress ? &progressBridge : nullptr;
    in.ctx = &bridge;
    in.threads = 0;
    // The plugin reads on its own worker threads: each of its tasks runs under the SIGBUS guard there.
    in.guard = [](void (*fn)(void*), void* arg) { return MappedFile::runGuarded(fn, arg) ? 1 : 0; };
    ckpt_stats_output out{};
    out.edges = edges.data();
    out.counts = counts.data();
    const int rc = api->compute(&in, &out);
    // As TensorReader does while streaming: the pages read leave our resident set (they stay in the page
    // cache), so statistics over many large tensors keep memory bounded by the largest one.
    file.release(static_cast<std::uint64_t>(static_cast<const std::uint8_t*>(in.data) - file.data()),
                 in.numel * dtypeSize(tensor.dtype));
    if (bridge.error)
        std::rethrow_exception(bridge.error);
    if (rc == CKPT_STATS_CANCELLED)
        return std::nullopt;
    if (rc == CKPT_STATS_ERROR && std::strcmp(out.error, CKPT_STATS_LOST_PAGES) == 0)
        throw Error(ErrorCode::Changed,
                    "the file was truncated on disk while its data was being read; reload it", file.path(),
                    {}, tensor.name);
    if (rc != CKPT_STATS_OK) // unsupported or failed: the portable path gives the answer (or the error)
        return computeStats(checkpoint, tensor, bins, progress);
    file.ensureReadable(tensor.name); // written to while the plugin read it: what it read is no data

    if (byPlugin)
        *byPlugin = true;
    TensorStats st;
    st.count = out.count;
    st.finite = out.finite;
    st.zeros = out.zeros;
    st.nan = out.nan;
    st.inf = out.inf;
    st.min = out.min;
    st.max = out.max;
    st.mean = out.mean;
    st.std = out.std;
    st.histogram.counts = std::move(counts);
    if (st.finite > 0) // as computeStats: no edges without a finite element
        st.histogram.edges = std::move(edges);
    return st;
}

} // namespace ckpt

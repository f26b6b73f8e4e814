#include "keras.h"

#include "torchpickle.h"

#include "io/bytereader.h"
#include "io/jsontext.h"
#include "io/zipreader.h"

#ifdef CKPT_HAVE_HDF5
// The 1.10 API (H5L_info_t::u.address, H5Oget_info_by_name2) also on newer libhdf5 releases.
#ifndef H5_USE_110_API
#define H5_USE_110_API 1
#endif
#include <hdf5.h>
#include <hdf5_hl.h>
#endif
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <poll.h>
#include <set>
#include <signal.h>
#include <string_view>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace ckpt {
namespace {

constexpr std::uint8_t kSignature[] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
constexpr std::size_t kMaxLinks = 1'000'000;
constexpr int kMaxDepth = 64;
constexpr std::size_t kMaxAttrs = 1024;
constexpr std::uint64_t kMaxAttrBytes = 64ull << 20;
constexpr int kMaxRank = 32;
constexpr std::uint64_t kMaxReadDataset = 2ull << 30;
constexpr std::uint64_t kMaxReadTotal = 4ull << 30;
constexpr std::uint64_t kMaxJson = 64ull << 20;
constexpr int kMaxJsonDepth = 256;
constexpr std::uint64_t kMaxInflated = 64ull << 30;
// Address space an HDF5 child may take beyond what it has when it starts. Reading a file's structure takes
// 1 GiB (attributes and JSON of up to 64 MiB each, the answer) and 32 bytes per byte of the file, up to
// 9 GiB: a file of 100,000 datasets (262 MB) took 540 MB. Reading a dataset of n bytes takes 1 GiB and 2n.
// Damaged heaps make libhdf5 ask for gigabytes (a 13 KB file: 4 GiB, all of it cleared) before it sees the
// damage; past this, the allocation fails and libhdf5 reports an error instead.
constexpr std::uint64_t kChildHeadroom = 1ull << 30;
constexpr std::uint64_t kChildPerFileByte = 32;
constexpr std::uint64_t kChildMaxHeadroom = 9ull << 30;

// Where the HDF5 file of a checkpoint lies, for reading it at opening and its datasets later.
struct Origin {
    std::shared_ptr<const MappedFile> owner; // keeps `image` alive: the file, or the inflated member
    const std::uint8_t* image = nullptr;
    std::uint64_t size = 0;
    std::uint64_t base = 0; // offset of the image in the file, for messages
    std::string path;       // the file's name in messages (for an inflated member: "archive:member")
    bool onDisk = false;    // `path` names the file on disk: libhdf5 reads it with pread
    // The file the image lies in, which must not change; null when the image is in memory.
    std::shared_ptr<const MappedFile> file;
};

// A source whose bytes are those of the dataset `h5path` of `origin`, read when first asked for.
std::shared_ptr<const MappedFile> lazyDataset(const Origin& origin, const std::string& h5path,
                                              std::uint64_t nbytes);

#ifdef CKPT_HAVE_HDF5
// Debian's serial libhdf5 is not thread-safe, and its error handler setting is process-wide.
std::mutex& h5Mutex() {
    static std::mutex m;
    return m;
}

// Owns one hid_t and closes it with the matching H5?close.
class H5Id {
public:
    H5Id() = default;
    H5Id(hid_t id, herr_t (*close)(hid_t))
        : m_id(id)
        , m_close(close) {}
    H5Id(const H5Id&) = delete;
    H5Id& operator=(const H5Id&) = delete;
    H5Id(H5Id&& o) noexcept
        : m_id(o.m_id)
        , m_close(o.m_close) {
        o.m_id = -1;
    }
    H5Id& operator=(H5Id&& o) noexcept {
        if (this != &o) {
            reset();
            m_id = o.m_id;
            m_close = o.m_close;
            o.m_id = -1;
        }
        return *this;
    }
    ~H5Id() { reset(); }
    void reset() {
        if (m_id >= 0 && m_close)
            m_close(m_id);
        m_id = -1;
    }
    hid_t get() const { return m_id; }
    bool ok() const { return m_id >= 0; }

private:
    hid_t m_id = -1;
    herr_t (*m_close)(hid_t) = nullptr;
};

// libhdf5's innermost message for the last failure ("truncated file: eof = ...", "bad symbol table node
// signature"). An automatic error handler records it when an API call fails: the high-level calls
// (H5LTopen_file_image) clear the error stack in their own clean-up, so it cannot be walked afterwards.
std::string g_lastH5Error; // guarded by h5Mutex()
int g_heartbeatFd = -1;    // in the forked child: the pipe to the parent, which takes silence as a hang

void heartbeat() {
    if (g_heartbeatFd >= 0) {
        const char h = 'H';
        [[maybe_unused]] const auto n = ::write(g_heartbeatFd, &h, 1);
    }
}

herr_t walkInnermost(hid_t stack, std::string& out) {
    return H5Ewalk2(
        stack, H5E_WALK_UPWARD,
        [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
            auto* o = static_cast<std::string*>(data);
            if (o->empty() && e && e->desc && *e->desc)
                *o = e->desc;
            return 0;
        },
        &out);
}

herr_t recordError(hid_t stack, void*) {
    std::string msg;
    walkInnermost(stack, msg);
    if (!msg.empty() && g_lastH5Error.empty())
        g_lastH5Error = std::move(msg);
    return 0; // prints nothing
}

void clearErrors() {
    H5Eclear2(H5E_DEFAULT);
    g_lastH5Error.clear();
}

std::string h5Message() {
    std::string msg = std::move(g_lastH5Error);
    if (msg.empty())
        walkInnermost(H5E_DEFAULT, msg);
    clearErrors();
    if (msg.empty())
        msg = "libhdf5 reported an error";
    return msg;
}

std::string dotted(std::string_view h5path) {
    std::string s(h5path);
    while (!s.empty() && s.front() == '/')
        s.erase(0, 1);
    std::replace(s.begin(), s.end(), '/', '.');
    return s;
}

// Natural order: digit runs compare as numbers, so vars/2 comes before vars/10.
bool naturalLess(const std::string& a, const std::string& b) {
    std::size_t i = 0, j = 0;
    while (i < a.size() && j < b.size()) {
        const bool da = a[i] >= '0' && a[i] <= '9', db = b[j] >= '0' && b[j] <= '9';
        if (da && db) {
            std::size_t ie = i, je = j;
            while (ie < a.size() && a[ie] >= '0' && a[ie] <= '9')
                ++ie;
            while (je < b.size() && b[je] >= '0' && b[je] <= '9')
                ++je;
            std::size_t is = i, js = j;
            while (is + 1 < ie && a[is] == '0')
                ++is;
            while (js + 1 < je && b[js] == '0')
                ++js;
            if (ie - is != je - js)
                return ie - is < je - js;
            const int c = a.compare(is, ie - is, b, js, je - js);
            if (c != 0)
                return c < 0;
            i = ie, j = je;
            continue;
        }
        if (a[i] != b[j])
            return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]);
        ++i, ++j;
    }
    return a.size() - i < b.size() - j;
}

struct AttrValue {
    enum class Kind { None, String, Strings, Int, Float } kind = Kind::None;
    std::string s;
    std::vector<std::string> list;
    std::int64_t i = 0;
    double f = 0;
};

std::string tensorName(const std::string& h5path) {
    std::string n = dotted(h5path);
    if (n.ends_with(":0"))
        n.resize(n.size() - 2);
    return n;
}

std::string layoutName(H5D_layout_t layout, int nfilters) {
    std::string s = layout == H5D_CHUNKED   ? "chunked"
                    : layout == H5D_COMPACT ? "compact"
                                            : "contiguous, never written";
    if (nfilters > 0)
        s += ", " + std::to_string(nfilters) + " filter" + (nfilters > 1 ? "s" : "");
    return s;
}

// Storages whose bytes are read from the file only when asked for (chunked, compressed, compact).
constexpr int kLazySource = -2;

// Opens an HDF5 file read-only: from disk with the sec2 driver (pread) when `onDisk`, as reading metadata
// spread over a large file through the mapping would fault in up to 64 KiB of tensor data around every page
// touched; else from the image in place (no H5LT_FILE_IMAGE_OPEN_RW: libhdf5 never writes it). -1 on failure.
hid_t openHdf5(const std::uint8_t* image, std::uint64_t size, const std::string& path, bool onDisk) {
    if (onDisk) {
        H5Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
        if (fapl.get() >= 0 && H5Pset_fapl_sec2(fapl.get()) >= 0)
            return H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
        return -1;
    }
    return H5LTopen_file_image(const_cast<std::uint8_t*>(image), static_cast<std::size_t>(size),
                               H5LT_FILE_IMAGE_DONT_COPY | H5LT_FILE_IMAGE_DONT_RELEASE);
}

class H5Reader {
public:
    // `onDisk`: `path` is the file `image` maps, so libhdf5 may read it with pread instead.
    H5Reader(Checkpoint& ck, const std::uint8_t* image, std::uint64_t size, std::uint64_t base, int source,
             std::string path, bool onDisk)
        : m_ck(ck)
        , m_image(image)
        , m_size(size)
        , m_base(base)
        , m_source(source)
        , m_path(std::move(path))
        , m_onDisk(onDisk) {}

    // Returns a description of the layout for formatDetail.
    std::string read() {
        H5Eset_auto2(H5E_DEFAULT, recordError, nullptr);
        clearErrors();
        if (m_size > std::numeric_limits<std::size_t>::max())
            throw Error(ErrorCode::Limit, "HDF5 file too large", m_path, m_base);
        const hid_t fid = openHdf5(m_image, m_size, m_path, m_onDisk);
        if (fid < 0) {
            const std::string msg = h5Message();
            throw Error(msg.starts_with("truncated file") ? ErrorCode::Truncated : ErrorCode::Malformed,
                        "libhdf5 cannot open the file: " + msg, m_path, m_base);
        }
        m_file = H5Id(fid, H5Fclose);
        walk();
        return finish();
    }

private:
    [[noreturn]] void fail(const std::string& object, const std::string& what) const {
        throw Error(ErrorCode::Malformed, "HDF5 object '" + object + "': " + what, m_path, m_base, object);
    }

    void warn(Severity sev, const std::string& msg, const std::string& object) {
        m_ck.findings.push_back({sev, msg, object, {}, {}, m_source});
    }

    struct Link {
        std::string name;
        H5L_type_t type;
        haddr_t address;
    };

    // Depth-first over hard links, children in natural order; groups visited once (hard-link cycles).
    void walk() {
        struct Item {
            std::string path;
            int depth;
        };
        std::vector<Item> stack{{"/", 0}};
        std::set<haddr_t> seenGroups;
        while (!stack.empty()) {
            const Item item = std::move(stack.back());
            stack.pop_back();
            heartbeat();
            H5Id g(H5Gopen2(m_file.get(), item.path.c_str(), H5P_DEFAULT), H5Gclose);
            if (!g.ok()) {
                const std::string msg = "group cannot be opened: " + h5Message();
                warn(Severity::Error, "HDF5 group '" + item.path + "': " + msg, item.path);
                continue;
            }
            m_groups.push_back(item.path);
            readAttributes(g.get(), item.path, m_groupAttrs[item.path]);

            std::vector<Link> links;
            struct Ctx {
                std::vector<Link>* links;
                std::size_t budget;
            } ctx{&links, kMaxLinks - std::min(kMaxLinks, m_links)};
            hsize_t idx = 0;
            const herr_t rc = H5Literate(
                g.get(), H5_INDEX_NAME, H5_ITER_NATIVE, &idx,
                [](hid_t, const char* name, const H5L_info_t* info, void* data) -> herr_t {
                    auto* c = static_cast<Ctx*>(data);
                    if (c->links->size() >= c->budget)
                        return 1;
                    c->links->push_back(
                        {name, info->type, info->type == H5L_TYPE_HARD ? info->u.address : 0});
                    return 0;
                },
                &ctx);
            if (rc < 0) {
                warn(Severity::Error,
                     "HDF5 group '" + item.path + "': its links cannot be listed: " + h5Message(), item.path);
                continue;
            }
            m_links += links.size();
            if (m_links >= kMaxLinks && rc > 0)
                throw Error(ErrorCode::Limit,
                            "HDF5 file has more than " + std::to_string(kMaxLinks) + " objects", m_path,
                            m_base, item.path);
            std::sort(links.begin(), links.end(),
                      [](const Link& a, const Link& b) { return naturalLess(a.name, b.name); });
            std::vector<Item> groups;
            for (const auto& l : links) {
                const std::string child = (item.path == "/" ? "/" : item.path + "/") + l.name;
                if (l.type != H5L_TYPE_HARD) {
                    warn(Severity::Warning,
                         "HDF5 link '" + child + "' is a soft or external link: not followed", child);
                    continue;
                }
                H5O_info_t oi;
                if (H5Oget_info_by_name2(g.get(), l.name.c_str(), &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0) {
                    warn(Severity::Error, "HDF5 object '" + child + "' cannot be read: " + h5Message(),
                         child);
                    continue;
                }
                if (oi.type == H5O_TYPE_GROUP) {
                    if (!seenGroups.insert(oi.addr).second)
                        continue;
                    if (item.depth + 1 > kMaxDepth)
                        throw Error(ErrorCode::Limit,
                                    "HDF5 groups nested deeper than " + std::to_string(kMaxDepth), m_path,
                                    m_base, child);
                    groups.push_back({child, item.depth + 1});
                } else if (oi.type == H5O_TYPE_DATASET) {
                    m_datasets.push_back(child);
                }
            }
            for (auto it = groups.rbegin(); it != groups.rend(); ++it)
                stack.push_back(std::move(*it));
        }
    }

    static bool readStrings(hid_t attr, hid_t type, hid_t space, AttrValue& out, std::uint64_t npoints) {
        if (H5Tis_variable_str(type) > 0) {
            H5Id mem(H5Tcopy(H5T_C_S1), H5Tclose);
            H5Tset_size(mem.get(), H5T_VARIABLE);
            H5Tset_cset(mem.get(), H5Tget_cset(type)); // libhdf5 does not convert between ASCII and UTF-8
            std::vector<char*> ptrs(npoints, nullptr);
            if (H5Aread(attr, mem.get(), ptrs.data()) < 0)
                return false;
            for (char* p : ptrs)
                out.list.emplace_back(p ? p : "");
            H5Dvlen_reclaim(mem.get(), space, H5P_DEFAULT, ptrs.data());
        } else {
            const std::size_t n = H5Tget_size(type);
            if (n == 0)
                return false;
            std::string buf(n * npoints, '\0');
            if (H5Aread(attr, type, buf.data()) < 0)
                return false;
            for (std::uint64_t k = 0; k < npoints; ++k) {
                std::string s = buf.substr(k * n, n);
                if (const auto z = s.find('\0'); z != std::string::npos)
                    s.resize(z);
                out.list.push_back(std::move(s));
            }
        }
        return true;
    }

    void readAttributes(hid_t obj, const std::string& objPath, std::map<std::string, AttrValue>& out) {
        std::vector<std::string> names;
        hsize_t idx = 0;
        H5Aiterate2(
            obj, H5_INDEX_NAME, H5_ITER_NATIVE, &idx,
            [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
                auto* v = static_cast<std::vector<std::string>*>(data);
                if (v->size() >= kMaxAttrs)
                    return 1;
                v->emplace_back(name);
                return 0;
            },
            &names);
        clearErrors();
        if (names.size() >= kMaxAttrs)
            warn(Severity::Warning,
                 "HDF5 object '" + objPath + "' has more than " + std::to_string(kMaxAttrs) +
                     " attributes: the rest are not read",
                 objPath);
        for (const auto& name : names) {
            heartbeat();
            H5Id a(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose);
            if (!a.ok()) {
                clearErrors();
                continue;
            }
            H5Id type(H5Aget_type(a.get()), H5Tclose);
            H5Id space(H5Aget_space(a.get()), H5Sclose);
            if (!type.ok() || !space.ok()) {
                clearErrors();
                continue;
            }
            const hssize_t np = H5Sget_simple_extent_npoints(space.get());
            const std::size_t tsize = H5Tget_size(type.get());
            if (np < 0 || tsize == 0) {
                clearErrors();
                continue;
            }
            const auto npoints = static_cast<std::uint64_t>(np);
            const H5T_class_t cls = H5Tget_class(type.get());
            std::uint64_t bytes = 0;
            const bool vlen = cls == H5T_STRING && H5Tis_variable_str(type.get()) > 0;
            if (mulOverflow(npoints, vlen ? sizeof(char*) : tsize, &bytes) || bytes > kMaxAttrBytes ||
                (vlen && H5Aget_storage_size(a.get()) > kMaxAttrBytes)) {
                warn(Severity::Warning,
                     "HDF5 attribute '" + objPath + "@" + name + "' is larger than " +
                         std::to_string(kMaxAttrBytes) + " bytes: not read",
                     objPath);
                continue;
            }
            AttrValue v;
            const bool scalar = H5Sget_simple_extent_type(space.get()) == H5S_SCALAR || npoints == 1;
            if (cls == H5T_STRING) {
                if (!readStrings(a.get(), type.get(), space.get(), v, npoints)) {
                    warn(Severity::Warning,
                         "HDF5 attribute '" + objPath + "@" + name + "' cannot be read: " + h5Message(),
                         objPath);
                    continue;
                }
                if (H5Sget_simple_extent_type(space.get()) == H5S_SCALAR && v.list.size() == 1) {
                    v.kind = AttrValue::Kind::String;
                    v.s = std::move(v.list.front());
                    v.list.clear();
                } else {
                    v.kind = AttrValue::Kind::Strings;
                }
            } else if (cls == H5T_INTEGER && scalar && npoints == 1) {
                const bool sign = H5Tget_sign(type.get()) == H5T_SGN_2;
                std::int64_t x = 0;
                std::uint64_t u = 0;
                if (H5Aread(a.get(), sign ? H5T_NATIVE_INT64 : H5T_NATIVE_UINT64,
                            sign ? (void*)&x : (void*)&u) < 0) {
                    clearErrors();
                    continue;
                }
                v.kind = AttrValue::Kind::Int;
                v.i = sign ? x : static_cast<std::int64_t>(u);
            } else if (cls == H5T_FLOAT && scalar && npoints == 1) {
                if (H5Aread(a.get(), H5T_NATIVE_DOUBLE, &v.f) < 0) {
                    clearErrors();
                    continue;
                }
                v.kind = AttrValue::Kind::Float;
            } else {
                continue; // arrays of numbers, compounds, references: not shown
            }
            out[name] = std::move(v);
        }
    }

    // Keras 2 splits attributes larger than 64 KiB into name0, name1, ...
    static std::vector<std::string> stringList(const std::map<std::string, AttrValue>& attrs,
                                               const std::string& name) {
        std::vector<std::string> out;
        auto take = [&](const AttrValue& v) {
            if (v.kind == AttrValue::Kind::Strings)
                out.insert(out.end(), v.list.begin(), v.list.end());
            else if (v.kind == AttrValue::Kind::String)
                out.push_back(v.s);
        };
        if (const auto it = attrs.find(name); it != attrs.end()) {
            take(it->second);
            return out;
        }
        for (int k = 0;; ++k) {
            const auto it = attrs.find(name + std::to_string(k));
            if (it == attrs.end())
                break;
            take(it->second);
        }
        return out;
    }

    struct TypeInfo {
        std::optional<DType> dtype;
        bool bigEndian = false;
        bool isString = false;
        std::string problem;
    };

    static bool ieeeFields(hid_t t, std::size_t spos, std::size_t epos, std::size_t esize,
                           std::size_t msize) {
        std::size_t sp = 0, ep = 0, es = 0, mp = 0, ms = 0;
        if (H5Tget_fields(t, &sp, &ep, &es, &mp, &ms) < 0)
            return false;
        return sp == spos && ep == epos && es == esize && mp == 0 && ms == msize && H5Tget_offset(t) == 0;
    }

    TypeInfo typeOf(hid_t did, hid_t t) {
        TypeInfo r;
        const H5T_class_t cls = H5Tget_class(t);
        const std::size_t size = H5Tget_size(t);
        const H5T_order_t order = H5Tget_order(t);
        r.bigEndian = order == H5T_ORDER_BE;
        switch (cls) {
        case H5T_FLOAT:
            if (size == 2 && ieeeFields(t, 15, 10, 5, 10))
                r.dtype = DType::Float16;
            else if (size == 2 && ieeeFields(t, 15, 7, 8, 7))
                r.dtype = DType::BFloat16;
            else if (size == 4 && ieeeFields(t, 31, 23, 8, 23))
                r.dtype = DType::Float32;
            else if (size == 8 && ieeeFields(t, 63, 52, 11, 52))
                r.dtype = DType::Float64;
            else
                r.problem = "unsupported " + std::to_string(size) + "-byte floating-point type";
            break;
        case H5T_INTEGER: {
            const bool sign = H5Tget_sign(t) == H5T_SGN_2;
            const bool full = H5Tget_precision(t) == size * 8 && H5Tget_offset(t) == 0;
            if (full && size == 1)
                r.dtype = sign ? DType::Int8 : DType::UInt8;
            else if (full && size == 2)
                r.dtype = sign ? DType::Int16 : DType::UInt16;
            else if (full && size == 4)
                r.dtype = sign ? DType::Int32 : DType::UInt32;
            else if (full && size == 8)
                r.dtype = sign ? DType::Int64 : DType::UInt64;
            else
                r.problem = "unsupported " + std::to_string(size) + "-byte integer type";
            if (size == 2 && r.dtype && hasBfloat16Attr(did))
                r.dtype = DType::BFloat16;
            break;
        }
        case H5T_ENUM: {
            // h5py writes numpy bool as an enum of int8 with FALSE = 0 and TRUE = 1.
            H5Id super(H5Tget_super(t), H5Tclose);
            if (size == 1 && super.ok() && H5Tget_nmembers(t) == 2) {
                r.dtype = DType::Bool;
                r.bigEndian = false;
            } else {
                r.problem = "enumerated type (not a boolean)";
            }
            break;
        }
        case H5T_OPAQUE:
            if (size == 2 && hasBfloat16Attr(did))
                r.dtype = DType::BFloat16;
            else
                r.problem = "opaque " + std::to_string(size) + "-byte type";
            r.bigEndian = false;
            break;
        case H5T_STRING:
            r.isString = true;
            r.problem = "string dataset";
            break;
        case H5T_COMPOUND:
            r.problem = "compound (record) type";
            break;
        case H5T_REFERENCE:
            r.problem = "reference type";
            break;
        case H5T_VLEN:
            r.problem = "variable-length type";
            break;
        case H5T_ARRAY:
            r.problem = "array type";
            break;
        default:
            r.problem = "unsupported HDF5 type class " + std::to_string(static_cast<int>(cls));
            break;
        }
        clearErrors();
        return r;
    }

    bool hasBfloat16Attr(hid_t did) {
        std::map<std::string, AttrValue> attrs;
        if (H5Aexists(did, "dtype") <= 0) {
            clearErrors();
            return false;
        }
        readAttributes(did, "", attrs);
        const auto it = attrs.find("dtype");
        return it != attrs.end() && it->second.kind == AttrValue::Kind::String && it->second.s == "bfloat16";
    }

    void addDataset(const std::string& h5path, const std::string& name) {
        heartbeat();
        TensorInfo t;
        t.name = name;
        t.device = "cpu";
        auto broken = [&](const std::string& what) {
            t.error = "HDF5 dataset '" + h5path + "': " + what;
            m_ck.findings.push_back({Severity::Error, t.error, name, {}, {}, m_source});
            m_ck.tensors.push_back(std::move(t));
        };
        H5Id d(H5Dopen2(m_file.get(), h5path.c_str(), H5P_DEFAULT), H5Dclose);
        if (!d.ok())
            return broken("cannot be opened: " + h5Message());
        H5Id type(H5Dget_type(d.get()), H5Tclose);
        H5Id space(H5Dget_space(d.get()), H5Sclose);
        H5Id dcpl(H5Dget_create_plist(d.get()), H5Pclose);
        if (!type.ok() || !space.ok() || !dcpl.ok())
            return broken("its type, shape or layout cannot be read: " + h5Message());
        const H5S_class_t sc = H5Sget_simple_extent_type(space.get());
        if (sc == H5S_SIMPLE) {
            const int rank = H5Sget_simple_extent_ndims(space.get());
            if (rank < 0 || rank > kMaxRank)
                return broken("invalid rank " + std::to_string(rank));
            std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
            if (H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
                return broken("its shape cannot be read: " + h5Message());
            for (const hsize_t x : dims) {
                if (x > static_cast<hsize_t>(std::numeric_limits<std::int64_t>::max()))
                    return broken("dimension too large");
                t.shape.push_back(static_cast<std::int64_t>(x));
            }
        } else if (sc != H5S_SCALAR) {
            return broken("has a null dataspace (no elements and no shape)");
        }
        const TypeInfo ti = typeOf(d.get(), type.get());
        if (ti.isString) {
            m_ck.findings.push_back({Severity::Info,
                                     "HDF5 dataset '" + h5path + "' holds strings: not shown as a tensor",
                                     name,
                                     {},
                                     {},
                                     m_source});
            return;
        }
        if (!ti.dtype)
            return broken("unsupported element type: " + ti.problem);
        t.dtype = *ti.dtype;
        t.strides.assign(t.shape.size(), 1);
        for (std::size_t i = t.shape.size(); i-- > 1;)
            if (__builtin_mul_overflow(t.strides[i], std::max<std::int64_t>(t.shape[i], 1),
                                       &t.strides[i - 1]))
                return broken("shape is too large for 64-bit strides");
        std::uint64_t numel = 1, nbytes = 0;
        for (const auto x : t.shape)
            if (mulOverflow(numel, static_cast<std::uint64_t>(x), &numel))
                return broken("element count overflows 64 bits");
        if (mulOverflow(numel, dtypeSize(t.dtype), &nbytes) || H5Tget_size(type.get()) != dtypeSize(t.dtype))
            return broken("byte size overflows 64 bits");

        StorageInfo s;
        s.key = h5path;
        s.device = "cpu";
        s.dtype = t.dtype;
        s.nbytes = nbytes;
        s.bigEndian = ti.bigEndian;

        const H5D_layout_t layout = H5Pget_layout(dcpl.get());
        const int nfilters = H5Pget_nfilters(dcpl.get());
        const int nexternal = H5Pget_external_count(dcpl.get());
        if (nexternal != 0) // external raw data files: never opened
            return broken("stores its data in external files, which are not read");
        if (layout == H5D_VIRTUAL)
            return broken("is a virtual dataset, which is not read");
        const haddr_t off = layout == H5D_CONTIGUOUS ? H5Dget_offset(d.get()) : HADDR_UNDEF;
        clearErrors();
        const hsize_t stored = H5Dget_storage_size(d.get());
        if (layout == H5D_CONTIGUOUS && nfilters == 0 && off != HADDR_UNDEF) {
            std::uint64_t end = 0;
            if (stored < nbytes)
                return broken("stores " + std::to_string(stored) + " bytes but its shape and type need " +
                              std::to_string(nbytes));
            if (addOverflow(off, nbytes, &end) || end > m_size)
                return broken("data at byte " + std::to_string(off) + " (" + std::to_string(nbytes) +
                              " bytes) runs past the end of the " + std::to_string(m_size) + "-byte file");
            s.source = m_source;
            s.fileOffset = m_base + off;
        } else {
            // Chunked, compressed, compact or never written: read whole, by another child process, when its
            // values are first asked for; bounded against declared sizes far beyond what is stored.
            if (nbytes > kMaxReadDataset)
                return broken(std::to_string(nbytes) + " bytes in " + layoutName(layout, nfilters) +
                              " storage: more than " + std::to_string(kMaxReadDataset) +
                              " bytes are not read into memory");
            if (nbytes > (64ull << 20) && stored < nbytes / 1000)
                return broken("declares " + std::to_string(nbytes) + " bytes but stores only " +
                              std::to_string(stored));
            if (m_readTotal + nbytes > kMaxReadTotal)
                return broken("chunked and compressed datasets of this file exceed " +
                              std::to_string(kMaxReadTotal) + " bytes in memory");
            m_readTotal += nbytes;
            ++m_lazyCount;
            s.source = kLazySource;
            s.fileOffset = 0;
        }
        t.storage = static_cast<int>(m_ck.storages.size());
        m_ck.storages.push_back(std::move(s));
        m_ck.tensors.push_back(std::move(t));
    }

    void addValue(const std::string& name, const AttrValue& v) {
        ValueArena& a = *m_ck.arena;
        switch (v.kind) {
        case AttrValue::Kind::String:
            m_ck.values.push_back({name, a.makeString(v.s)});
            break;
        case AttrValue::Kind::Int:
            m_ck.values.push_back({name, a.makeInt(v.i)});
            break;
        case AttrValue::Kind::Float: {
            Value* x = a.make(ValueKind::Float);
            x->real = v.f;
            m_ck.values.push_back({name, x});
            break;
        }
        default:
            break;
        }
    }

    std::string finish() {
        // Keras 2: weights in layer_names / weight_names order.
        std::set<std::string> present(m_datasets.begin(), m_datasets.end());
        std::vector<std::string> order;
        std::set<std::string> emitted;
        auto emit = [&](const std::string& p) {
            if (present.count(p) && emitted.insert(p).second)
                order.push_back(p);
        };
        std::string kind = "HDF5";
        const auto& rootAttrs = m_groupAttrs["/"];
        std::string weightsRoot;
        if (m_groupAttrs.count("/model_weights") &&
            !stringList(m_groupAttrs["/model_weights"], "layer_names").empty())
            weightsRoot = "/model_weights";
        else if (!stringList(rootAttrs, "layer_names").empty())
            weightsRoot = "/";
        if (!weightsRoot.empty()) {
            kind = weightsRoot == "/" ? "Keras 2 weights (save_weights)" : "Keras 2 model (model.save)";
            const std::string prefix = weightsRoot == "/" ? "/" : weightsRoot + "/";
            for (const auto& layer : stringList(m_groupAttrs[weightsRoot], "layer_names")) {
                const std::string lp = prefix + layer;
                const auto git = m_groupAttrs.find(lp);
                if (git == m_groupAttrs.end()) {
                    warn(Severity::Warning,
                         "Keras layer '" + layer + "' is listed in layer_names but has no group", dotted(lp));
                    continue;
                }
                for (const auto& w : stringList(git->second, "weight_names")) {
                    const std::string wp = lp + "/" + w;
                    if (!present.count(wp))
                        warn(Severity::Warning,
                             "Keras weight '" + w + "' of layer '" + layer + "' is listed but has no dataset",
                             tensorName(wp));
                    emit(wp);
                }
            }
            if (m_groupAttrs.count("/optimizer_weights"))
                for (const auto& w : stringList(m_groupAttrs["/optimizer_weights"], "weight_names"))
                    emit("/optimizer_weights/" + w);
        } else if (m_groupAttrs.count("/layers") || m_groupAttrs.count("/vars") ||
                   m_groupAttrs.count("/optimizer")) {
            kind = "Keras 3 weights";
        }
        for (const auto& p : m_datasets)
            emit(p);
        std::set<std::string> names;
        for (const auto& p : order) {
            std::string n = tensorName(p);
            if (!names.insert(n).second) { // "x" and "x:0" side by side: keep the full name
                n = dotted(p);
                names.insert(n);
            }
            addDataset(p, n);
        }
        // Values: scalar attributes of every group.
        for (const auto& g : m_groups) {
            for (const auto& [attr, v] : m_groupAttrs[g]) {
                if (v.kind == AttrValue::Kind::Strings || v.kind == AttrValue::Kind::None)
                    continue;
                addValue(g == "/" ? attr : dotted(g) + "." + attr, v);
            }
        }
        std::string detail = kind;
        if (const auto it = rootAttrs.find("keras_version");
            it != rootAttrs.end() && it->second.kind == AttrValue::Kind::String)
            detail += ", keras_version " + it->second.s;
        if (const auto it = rootAttrs.find("backend");
            it != rootAttrs.end() && it->second.kind == AttrValue::Kind::String)
            detail += ", backend " + it->second.s;
        detail += ", " + std::to_string(order.size()) + " datasets";
        if (m_lazyCount)
            detail += " (" + std::to_string(m_lazyCount) + " chunked or compressed, read on demand)";
        return detail;
    }

    Checkpoint& m_ck;
    const std::uint8_t* m_image;
    std::uint64_t m_size;
    std::uint64_t m_base;
    int m_source;
    std::string m_path;
    bool m_onDisk = false;
    H5Id m_file;
    std::size_t m_links = 0;
    std::vector<std::string> m_groups;
    std::vector<std::string> m_datasets;
    std::map<std::string, std::map<std::string, AttrValue>> m_groupAttrs;
    std::uint64_t m_readTotal = 0;
    std::size_t m_lazyCount = 0;
};

// libhdf5 1.10 is not hardened against hostile files: corrupted global heaps and object headers make it
// read out of bounds (fuzzing a Keras file crashed it in H5HG_read within a few hundred tries). So it runs in
// a forked child that reads the mapping (shared with the parent, never copied) and sends back what it found
// over a pipe; a child that dies or hangs becomes a clean error for that file.
class Wire {
public:
    void u64(std::uint64_t v) { m_b.append(reinterpret_cast<const char*>(&v), sizeof v); }
    void str(std::string_view s) {
        u64(s.size());
        m_b.append(s);
    }
    std::string& bytes() { return m_b; }

private:
    std::string m_b;
};

class WireReader {
public:
    explicit WireReader(const std::string& b)
        : m_b(b) {}
    std::uint64_t u64() {
        if (m_b.size() - m_p < 8)
            throw std::runtime_error("short");
        std::uint64_t v;
        std::memcpy(&v, m_b.data() + m_p, 8);
        m_p += 8;
        return v;
    }
    std::string str() {
        const std::uint64_t n = u64();
        if (n > m_b.size() - m_p)
            throw std::runtime_error("short");
        std::string s = m_b.substr(m_p, n);
        m_p += n;
        return s;
    }

private:
    const std::string& m_b;
    std::size_t m_p = 0;
};

constexpr std::uint64_t kWireOk = 0x4b45524153'4f4bull, kWireError = 0x4b45524153'4552ull;

// In the child: everything the reader found, storages of the image as source -1.
void serialize(Wire& w, const Checkpoint& ck, const std::string& detail) {
    w.u64(kWireOk);
    w.str(detail);
    w.u64(ck.sources.size());
    for (const auto& s : ck.sources) {
        w.str(s.path);
        w.str(std::string_view(reinterpret_cast<const char*>(s.file->data()), s.file->size()));
    }
    w.u64(ck.storages.size());
    for (const auto& s : ck.storages) {
        w.str(s.key);
        w.u64(static_cast<std::uint64_t>(s.dtype));
        w.u64(s.nbytes);
        w.u64(static_cast<std::uint64_t>(static_cast<std::int64_t>(s.source)));
        w.u64(s.fileOffset);
        w.u64(s.bigEndian);
    }
    w.u64(ck.tensors.size());
    for (const auto& t : ck.tensors) {
        w.str(t.name);
        w.u64(static_cast<std::uint64_t>(t.dtype));
        w.u64(t.shape.size());
        for (const auto d : t.shape)
            w.u64(static_cast<std::uint64_t>(d));
        for (const auto d : t.strides)
            w.u64(static_cast<std::uint64_t>(d));
        w.u64(static_cast<std::uint64_t>(static_cast<std::int64_t>(t.storage)));
        w.str(t.error);
    }
    w.u64(ck.values.size());
    for (const auto& v : ck.values) {
        w.str(v.name);
        w.u64(static_cast<std::uint64_t>(v.value->kind));
        w.u64(static_cast<std::uint64_t>(v.value->integer));
        w.u64(std::bit_cast<std::uint64_t>(v.value->real));
        w.str(v.value->text);
    }
    w.u64(ck.findings.size());
    for (const auto& f : ck.findings) {
        w.u64(static_cast<std::uint64_t>(f.severity));
        w.str(f.message);
        w.str(f.object);
    }
}

DType wireDType(std::uint64_t v) {
    if (v > 255)
        throw std::runtime_error("bad dtype");
    (void)dtypeInfo(static_cast<DType>(v)); // throws std::out_of_range for a value past the table
    return static_cast<DType>(v);
}

// The answer comes from a process that ran libhdf5 over hostile bytes, so it is checked as any input is:
// enums in range, indexes to what this answer sent, byte ranges inside their file, views inside their
// storage.
std::string deserialize(const std::string& bytes, Checkpoint& ck, int imageSource, const std::string& path,
                        std::uint64_t base, const Origin* origin = nullptr) {
    WireReader r(bytes);
    const std::uint64_t tag = r.u64();
    if (tag == kWireError) {
        const auto code = static_cast<ErrorCode>(r.u64());
        const std::string msg = r.str();
        const std::string object = r.str();
        throw Error(code, msg, path, base, object);
    }
    if (tag != kWireOk)
        throw std::runtime_error("bad tag");
    const std::string detail = r.str();
    std::vector<int> sourceMap;
    for (std::uint64_t n = r.u64(), i = 0; i < n; ++i) {
        std::string p = r.str();
        auto mem = MappedFile::fromBuffer(p, r.str());
        sourceMap.push_back(static_cast<int>(ck.sources.size()));
        ck.sources.push_back({p, mem});
    }
    // Storages read on demand get a lazy source of their own, read from `origin` (none: refused).
    auto mapSource = [&](std::int64_t s, const StorageInfo& storage) {
        if (s == kLazySource) {
            if (!origin || storage.nbytes > kMaxReadDataset)
                throw std::runtime_error("bad lazy storage");
            auto lazy = lazyDataset(*origin, storage.key, storage.nbytes);
            ck.sources.push_back({lazy->path(), std::move(lazy)});
            return static_cast<int>(ck.sources.size()) - 1;
        }
        if (s < 0)
            return imageSource;
        if (static_cast<std::uint64_t>(s) >= sourceMap.size())
            throw std::runtime_error("bad source");
        return sourceMap[static_cast<std::size_t>(s)];
    };
    const int storageBase = static_cast<int>(ck.storages.size());
    for (std::uint64_t n = r.u64(), i = 0; i < n; ++i) {
        StorageInfo s;
        s.key = r.str();
        s.device = "cpu";
        s.dtype = wireDType(r.u64());
        s.nbytes = r.u64();
        s.source = mapSource(static_cast<std::int64_t>(r.u64()), s);
        s.fileOffset = r.u64();
        s.bigEndian = r.u64() != 0;
        std::uint64_t end = 0;
        if (s.source < 0 || static_cast<std::size_t>(s.source) >= ck.sources.size() ||
            addOverflow(s.fileOffset, s.nbytes, &end) ||
            end > ck.sources[static_cast<std::size_t>(s.source)].file->size())
            throw std::runtime_error("bad storage extent");
        ck.storages.push_back(std::move(s));
    }
    for (std::uint64_t n = r.u64(), i = 0; i < n; ++i) {
        TensorInfo t;
        t.name = r.str();
        t.device = "cpu";
        t.dtype = wireDType(r.u64());
        const std::uint64_t rank = r.u64();
        if (rank > kMaxRank)
            throw std::runtime_error("bad rank");
        for (std::uint64_t k = 0; k < rank; ++k)
            t.shape.push_back(static_cast<std::int64_t>(r.u64()));
        for (std::uint64_t k = 0; k < rank; ++k)
            t.strides.push_back(static_cast<std::int64_t>(r.u64()));
        for (std::uint64_t k = 0; k < rank; ++k)
            if (t.shape[k] < 0 || t.strides[k] < 0)
                throw std::runtime_error("bad shape");
        const auto st = static_cast<std::int64_t>(r.u64());
        if (st >= static_cast<std::int64_t>(ck.storages.size()) - storageBase)
            throw std::runtime_error("bad storage");
        t.storage = st < 0 ? -1 : storageBase + static_cast<int>(st);
        t.error = r.str();
        ck.tensors.push_back(std::move(t));
    }
    for (std::uint64_t n = r.u64(), i = 0; i < n; ++i) {
        std::string name = r.str();
        const auto kind = static_cast<ValueKind>(r.u64());
        const auto integer = static_cast<std::int64_t>(r.u64());
        const double real = std::bit_cast<double>(r.u64());
        std::string text = r.str();
        Value* v = kind == ValueKind::String ? ck.arena->makeString(text)
                   : kind == ValueKind::Int  ? ck.arena->makeInt(integer)
                                             : ck.arena->make(ValueKind::Float);
        if (kind == ValueKind::Float)
            v->real = real;
        ck.values.push_back({std::move(name), v});
    }
    for (std::uint64_t n = r.u64(), i = 0; i < n; ++i) {
        Finding f;
        const std::uint64_t severity = r.u64();
        if (severity > static_cast<std::uint64_t>(Severity::Security))
            throw std::runtime_error("bad severity");
        f.severity = static_cast<Severity>(severity);
        f.message = r.str();
        f.object = r.str();
        f.source = imageSource;
        ck.findings.push_back(std::move(f));
    }
    checkTensorExtents(ck);
    return detail;
}

std::string decodeAnswer(const std::string& bytes, Checkpoint& ck, int source, const std::string& path,
                         std::uint64_t base, const Origin* origin = nullptr) {
    try {
        return deserialize(bytes, ck, source, path, base, origin);
    } catch (const Error&) {
        throw;
    } catch (const std::exception&) {
        throw Error(ErrorCode::Malformed, "the HDF5 reader sent an incomplete answer", path, base);
    }
}

bool writeAll(int fd, const char* p, std::size_t n) {
    while (n) {
        const ssize_t k = ::write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        p += k;
        n -= static_cast<std::size_t>(k);
    }
    return true;
}

// In the child: runs `work`, whose answer (or the Error it throws) goes to the parent over `fd`.
[[noreturn]] void childMain(int fd, const std::function<std::string()>& work, pid_t parent,
                            std::uint64_t memory) {
    // Never outlive the process that waits for the answer: a libhdf5 caught in a loop by a hostile file would
    // otherwise spin on, holding whatever the parent shared with it (its output pipes, for one).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
        _exit(4);
    g_heartbeatFd = fd;
#if !defined(__SANITIZE_ADDRESS__)
    // Corrupted heaps and variable-length data make libhdf5 allocate and clear absurd sizes; bound the
    // child's address space to what its work may legitimately need (`memory` beyond what it has now).
    if (FILE* statm = std::fopen("/proc/self/statm", "r")) {
        unsigned long long pages = 0;
        if (std::fscanf(statm, "%llu", &pages) == 1) {
            const rlim_t limit = pages * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)) + memory;
            const rlimit rl{limit, limit};
            ::setrlimit(RLIMIT_AS, &rl);
        }
        std::fclose(statm);
    }
#endif
    std::string answer;
    auto error = [&](ErrorCode code, const std::string& message, const std::string& object) {
        Wire w;
        w.u64(kWireError);
        w.u64(static_cast<std::uint64_t>(code));
        w.str(message);
        w.str(object);
        answer = std::move(w.bytes());
    };
    try {
        answer = work();
    } catch (const Error& e) {
        error(e.code(), e.message(), e.object());
    } catch (const std::exception& e) {
        error(ErrorCode::Malformed, std::string("HDF5 reader failed: ") + e.what(), {});
    }
    _exit(writeAll(fd, answer.data(), answer.size()) ? 0 : 3);
}

// No sign of progress for this long (the child writes a heartbeat byte per object): taken to hang. A single
// dataset read (at most 2 GiB, decompressed) must fit in it.
std::atomic<int> g_childTimeoutMs{60'000};

// libhdf5 1.10 is not hardened against hostile files, so it only ever runs in a forked child: `work` runs
// there and its answer comes back over a pipe, heartbeats removed. A child that dies or hangs becomes an
// Error naming `path`. `memory`: the address space the child may take beyond its own at the fork (not
// enforced under AddressSanitizer, whose shadow memory needs terabytes). `expected`: the answer's likely
// size, reserved up front.
std::string runIsolated(const std::string& path, std::uint64_t base, const std::function<std::string()>& work,
                        std::uint64_t memory, std::size_t expected = 0) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
        throw Error(ErrorCode::Io, std::string("cannot create a pipe: ") + std::strerror(errno), path, base);
    pid_t pid = -1;
    const pid_t parent = ::getpid();
    {
        std::lock_guard lock(h5Mutex());
        pid = ::fork();
    }
    if (pid < 0) {
        ::close(fds[0]);
        ::close(fds[1]);
        throw Error(ErrorCode::Io, std::string("cannot start the HDF5 reader: ") + std::strerror(errno), path,
                    base);
    }
    if (pid == 0) {
        ::close(fds[0]);
        childMain(fds[1], work, parent, memory);
    }
    ::close(fds[1]);
    std::string bytes;
    bool hung = false;
    const int timeoutMs = g_childTimeoutMs.load();
    try {
        bytes.reserve(expected);
        char buf[1 << 16];
        while (true) {
            pollfd p{fds[0], POLLIN, 0};
            const int pr = ::poll(&p, 1, timeoutMs);
            if (pr < 0 && errno == EINTR)
                continue;
            if (pr == 0) {
                hung = true;
                ::kill(pid, SIGKILL);
                break;
            }
            const ssize_t k = ::read(fds[0], buf, sizeof buf);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                break;
            bytes.append(buf, static_cast<std::size_t>(k));
        }
    } catch (const std::bad_alloc&) {
        ::kill(pid, SIGKILL);
        bytes = {};
    }
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (hung)
        throw Error(ErrorCode::Malformed,
                    "libhdf5 did not finish reading the file within " +
                        (timeoutMs % 1000 ? std::to_string(timeoutMs) + " ms"
                                          : std::to_string(timeoutMs / 1000) + " s") +
                        ": the file is damaged or hostile",
                    path, base);
    if (WIFSIGNALED(status))
        throw Error(ErrorCode::Malformed,
                    "libhdf5 crashed reading the file (signal " + std::to_string(WTERMSIG(status)) +
                        "): the file is damaged or hostile",
                    path, base);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw Error(ErrorCode::Malformed,
                    "the HDF5 reader failed (exit status " +
                        std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")",
                    path, base);
    const std::size_t beats = bytes.find_first_not_of('H');
    bytes.erase(0, beats == std::string::npos ? bytes.size() : beats);
    return bytes;
}

std::string readImage(Checkpoint& ck, const Origin& origin, int source) {
    std::string bytes = runIsolated(
        origin.path, origin.base,
        [&] {
            Checkpoint tmp;
            tmp.arena = std::make_shared<ValueArena>();
            H5Reader r(tmp, origin.image, origin.size, origin.base, -1, origin.path, origin.onDisk);
            const std::string detail = r.read();
            Wire w;
            serialize(w, tmp, detail);
            return std::move(w.bytes());
        },
        std::min(kChildHeadroom + kChildPerFileByte * origin.size, kChildMaxHeadroom));
    return decodeAnswer(bytes, ck, source, origin.path, origin.base, &origin);
}

// In the child: the answer holding the bytes of one dataset, read whole with its own type as the memory
// type, as the reader of the file found it (`nbytes`).
std::string readDataset(const Origin& origin, const std::string& h5path, std::uint64_t nbytes) {
    H5Eset_auto2(H5E_DEFAULT, recordError, nullptr);
    clearErrors();
    const auto fail = [&](const std::string& what) {
        throw Error(ErrorCode::Malformed, "HDF5 dataset '" + h5path + "': " + what, origin.path, {},
                    tensorName(h5path));
    };
    H5Id file(openHdf5(origin.image, origin.size, origin.path, origin.onDisk), H5Fclose);
    if (!file.ok())
        fail("libhdf5 cannot open the file again: " + h5Message());
    H5Id d(H5Dopen2(file.get(), h5path.c_str(), H5P_DEFAULT), H5Dclose);
    if (!d.ok())
        fail("cannot be opened again: " + h5Message());
    H5Id type(H5Dget_type(d.get()), H5Tclose);
    H5Id space(H5Dget_space(d.get()), H5Sclose);
    H5Id dcpl(H5Dget_create_plist(d.get()), H5Pclose);
    if (!type.ok() || !space.ok() || !dcpl.ok())
        fail("its type, shape or layout cannot be read: " + h5Message());
    const hssize_t points = H5Sget_simple_extent_npoints(space.get());
    std::uint64_t now = 0;
    if (points < 0 || mulOverflow(static_cast<std::uint64_t>(points), H5Tget_size(type.get()), &now) ||
        now != nbytes || nbytes > kMaxReadDataset)
        fail("holds " + std::to_string(now) + " bytes now, " + std::to_string(nbytes) +
             " when it was opened");
    const H5D_layout_t layout = H5Pget_layout(dcpl.get());
    const std::string how = layoutName(layout, H5Pget_nfilters(dcpl.get()));
    std::string answer(16 + static_cast<std::size_t>(nbytes), '\0');
    const std::uint64_t head[2] = {kWireOk, nbytes};
    std::memcpy(answer.data(), head, sizeof head);
    char* out = answer.data() + 16;
    const int rank = H5Sget_simple_extent_ndims(space.get());
    std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(rank, 0))), chunk(dims.size());
    if (nbytes == 0)
        return answer;
    if (layout != H5D_CHUNKED || rank < 1 || rank > kMaxRank ||
        H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0 ||
        H5Pget_chunk(dcpl.get(), rank, chunk.data()) < 0 || dims[0] < 2) {
        clearErrors();
        if (H5Dread(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
            fail("cannot be read (" + how + "): " + h5Message());
        return answer;
    }
    // Slabs of whole chunk rows along the first dimension (each chunk is inflated once), about 64 MiB each,
    // with a heartbeat after each: a large compressed dataset takes longer than the parent waits in silence.
    const std::uint64_t rowBytes = nbytes / dims[0];
    const hsize_t step = std::max<hsize_t>(chunk[0], 1);
    const hsize_t rows =
        std::max<std::uint64_t>(1, (64ull << 20) / std::max<std::uint64_t>(rowBytes * step, 1)) * step;
    std::vector<hsize_t> start(dims.size(), 0), count = dims;
    for (hsize_t row = 0; row < dims[0]; row += rows) {
        start[0] = row;
        count[0] = std::min(rows, dims[0] - row);
        H5Id fileSpace(H5Scopy(space.get()), H5Sclose);
        H5Id memSpace(H5Screate_simple(rank, count.data(), nullptr), H5Sclose);
        if (!fileSpace.ok() || !memSpace.ok() ||
            H5Sselect_hyperslab(fileSpace.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(),
                                nullptr) < 0 ||
            H5Dread(d.get(), type.get(), memSpace.get(), fileSpace.get(), H5P_DEFAULT, out + row * rowBytes) <
                0)
            fail("cannot be read (" + how + "): " + h5Message());
        heartbeat();
    }
    return answer;
}

std::shared_ptr<const MappedFile> lazyDataset(const Origin& origin, const std::string& h5path,
                                              std::uint64_t nbytes) {
    const std::string name = origin.path + ":" + h5path;
    if (nbytes == 0)
        return MappedFile::fromBuffer(name, {});
    return MappedFile::lazy(name, nbytes, [origin, h5path, nbytes]() -> std::string {
        const std::string object = tensorName(h5path);
        // libhdf5 reads the file again: it must still be the one whose structure was read at opening.
        if (origin.file && origin.file->changedOnDisk())
            throw Error(ErrorCode::Changed,
                        "the file changed on disk after it was opened; reload it to read HDF5 dataset '" +
                            h5path + "'",
                        origin.file->path(), {}, object);
        std::string bytes;
        try {
            bytes = runIsolated(
                origin.path, origin.base, [&] { return readDataset(origin, h5path, nbytes); },
                2 * nbytes + kChildHeadroom, static_cast<std::size_t>(nbytes) + 16 + 4096); // and heartbeats
        } catch (const Error& e) {
            throw Error(e.code(), "HDF5 dataset '" + h5path + "': " + e.message(), e.file(), {}, object);
        }
        std::uint64_t head[2] = {0, 0};
        if (bytes.size() >= sizeof head)
            std::memcpy(head, bytes.data(), sizeof head);
        if (head[0] == kWireError) {
            try {
                WireReader r(bytes);
                r.u64();
                const auto code = static_cast<ErrorCode>(r.u64());
                const std::string msg = r.str();
                const std::string childObject = r.str();
                throw Error(code, msg, origin.path, {}, childObject);
            } catch (const Error&) {
                throw;
            } catch (const std::exception&) {
            }
        }
        if (head[0] != kWireOk || head[1] != nbytes || bytes.size() != 16 + nbytes)
            throw Error(ErrorCode::Malformed,
                        "the HDF5 reader sent an incomplete answer for dataset '" + h5path + "'", origin.path,
                        {}, object);
        bytes.erase(0, 16);
        return bytes;
    });
}

#else
std::string decodeAnswer(const std::string&, Checkpoint&, int, const std::string& path, std::uint64_t base,
                         const Origin* = nullptr) {
    throw Error(ErrorCode::Unsupported, "HDF5 (Keras) files are not supported: built without libhdf5", path,
                base);
}

std::string readImage(Checkpoint&, const Origin& origin, int) {
    throw Error(ErrorCode::Unsupported, "HDF5 (Keras) files are not supported: built without libhdf5",
                origin.path, origin.base);
}
#endif

bool hasSignatureAt(std::span<const std::uint8_t> b, std::uint64_t at) {
    return at + sizeof kSignature <= b.size() &&
           std::memcmp(b.data() + at, kSignature, sizeof kSignature) == 0;
}

} // namespace

std::string decodeHdf5ReaderAnswer(const std::string& bytes, Checkpoint& ck, int imageSource,
                                   const std::string& path) {
    return decodeAnswer(bytes, ck, imageSource, path, 0);
}

bool looksLikeHdf5(const std::shared_ptr<const MappedFile>& file) {
    const auto b = file->bytes();
    if (hasSignatureAt(b, 0))
        return true;
    // A user block of 512, 1024, 2048, ... bytes before the superblock; probe a few without touching much.
    for (std::uint64_t at = 512; at <= (1ull << 20) && at + 8 <= file->size(); at *= 2) {
        std::uint8_t sig[8];
        if (file->readAt(at, sizeof sig, sig) && std::memcmp(sig, kSignature, sizeof sig) == 0)
            return true;
    }
    return false;
}

std::shared_ptr<Checkpoint> readKerasH5(std::shared_ptr<const MappedFile> file) {
    auto ck = newCheckpoint(file, "keras-h5");
    // The path is read by libhdf5 itself only while it still names the mapped file.
    const bool onDisk = file->isOnDisk() && !file->changedOnDisk();
    const Origin origin{file, file->data(), file->size(), 0, file->path(), onDisk, file};
    ck->formatDetail = readImage(*ck, origin, 0);
    return ck;
}

bool looksLikeKerasZip(const std::shared_ptr<const MappedFile>& file) {
    try {
        ZipArchive zip(file);
        return zip.find("model.weights.h5") || (zip.find("config.json") && zip.find("metadata.json"));
    } catch (const Error&) {
        return false;
    }
}

std::shared_ptr<Checkpoint> readKerasZip(std::shared_ptr<const MappedFile> file) {
    auto ck = newCheckpoint(file, "keras");
    ZipArchive zip(file);
    const std::string& path = file->path();
    std::string detail = "Keras 3 .keras archive";
    for (const char* member : {"metadata.json", "config.json"}) {
        const ZipEntry* e = zip.find(member);
        if (!e)
            continue;
        if (!e->problem.empty()) {
            ck->findings.push_back({Severity::Error,
                                    "zip entry '" + e->name + "': " + e->problem,
                                    member,
                                    {},
                                    e->localHeaderOffset,
                                    0});
            continue;
        }
        try {
            const std::string text = zip.read(*e, kMaxJson);
            ck->values.push_back({member, ck->arena->makeString(text)});
            if (const auto deep = jsonTooDeep(text, kMaxJsonDepth)) {
                ck->findings.push_back({Severity::Warning,
                                        "nests deeper than " + std::to_string(kMaxJsonDepth) +
                                            " levels at byte " + std::to_string(*deep) +
                                            " of the member; it is not read further",
                                        member,
                                        {},
                                        e->dataOffset,
                                        0});
                continue;
            }
            // Only a few top-level fields are shown: deeper values are parsed but not kept, so a config of
            // tens of MiB does not become gigabytes of JSON nodes.
            const auto j = nlohmann::json::parse(
                text, [](int depth, nlohmann::json::parse_event_t, nlohmann::json&) { return depth <= 2; },
                false);
            const std::string stem = std::string(member).substr(0, std::strlen(member) - 5);
            if (j.is_object()) {
                for (const char* key : {"keras_version", "date_saved", "class_name"})
                    if (const auto it = j.find(key); it != j.end() && it->is_string())
                        ck->values.push_back(
                            {stem + "." + key, ck->arena->makeString(it->get<std::string>())});
                if (const auto c = j.find("config"); c != j.end() && c->is_object())
                    if (const auto n = c->find("name"); n != c->end() && n->is_string())
                        ck->values.push_back({stem + ".name", ck->arena->makeString(n->get<std::string>())});
                if (stem == "metadata")
                    if (const auto v = j.find("keras_version"); v != j.end() && v->is_string())
                        detail += ", keras_version " + v->get<std::string>();
            } else {
                ck->findings.push_back({Severity::Warning,
                                        std::string(member) + " is not a JSON object",
                                        member,
                                        {},
                                        e->dataOffset,
                                        0});
            }
        } catch (const Error& err) {
            ck->findings.push_back({Severity::Error,
                                    "member '" + e->name + "': " + err.message(),
                                    member,
                                    {},
                                    e->localHeaderOffset,
                                    0});
        }
    }
    const ZipEntry* w = zip.find("model.weights.h5");
    if (!w) {
        if (zip.find("model.weights.npz"))
            ck->findings.push_back(
                {Severity::Warning,
                 "weights are stored as model.weights.npz, which this reader does not open",
                 "model.weights.npz",
                 {},
                 {},
                 0});
        else
            ck->findings.push_back(
                {Severity::Warning, "the archive holds no model.weights.h5", {}, {}, {}, 0});
        ck->formatDetail = detail + ", no weights";
        return ck;
    }
    if (!w->problem.empty())
        throw Error(ErrorCode::Malformed, "zip entry 'model.weights.h5': " + w->problem, path,
                    w->localHeaderOffset);
    std::string inner;
    try {
        if (w->method == 0) {
            const auto bytes = zip.storedData(*w);
            const Origin origin{file, bytes.data(), bytes.size(), w->dataOffset, path, false, file};
            inner = readImage(*ck, origin, 0);
        } else {
            std::uint64_t plausible = 0;
            if (mulOverflow(w->compressedSize, 1032, &plausible) || addOverflow(plausible, 1024, &plausible))
                plausible = kMaxInflated;
            std::string bytes = zip.read(*w, std::min(plausible, kMaxInflated));
            auto mem = MappedFile::fromBuffer(path + ":model.weights.h5", std::move(bytes));
            const int source = static_cast<int>(ck->sources.size());
            ck->sources.push_back({mem->path(), mem});
            const Origin origin{mem, mem->data(), mem->size(), 0, mem->path(), false, nullptr};
            inner = readImage(*ck, origin, source) + ", inflated in memory";
        }
    } catch (const Error& e) {
        throw Error(e.code(), "member 'model.weights.h5': " + e.message(), path, e.offset(), e.object());
    }
    ck->formatDetail = detail + "; model.weights.h5: " + inner;
    return ck;
}

void setHdf5ReaderTimeout(std::chrono::milliseconds limit) {
    g_childTimeoutMs = static_cast<int>(std::clamp<std::int64_t>(limit.count(), 1, 3'600'000));
}

} // namespace ckpt

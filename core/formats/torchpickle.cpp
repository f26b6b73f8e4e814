#include "torchpickle.h"

#include "io/bytereader.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <unordered_set>

namespace ckpt {
namespace {

constexpr std::size_t kMaxDims = 64;

bool isInt(const Value* v) {
    return v && v->kind == ValueKind::Int;
}
bool isTuple(const Value* v) {
    return v && (v->kind == ValueKind::Tuple || v->kind == ValueKind::List);
}
const Value* arg(const Value* args, std::size_t i) {
    return args && i < args->items.size() ? args->items[i] : nullptr;
}

// Whether an untrusted global may be shown as data without a finding: constructors of plain values.
bool isPlainDataGlobal(const std::string& module, const std::string& name) {
    static const std::unordered_set<std::string> kSafe = {
        "builtins.list",
        "builtins.dict",
        "builtins.tuple",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
        "builtins.bytes",
        "builtins.slice",
        "builtins.range",
        "builtins.object",
        "collections.defaultdict",
        "collections.deque",
        "copyreg._reconstructor",
        "torch.Tensor",
        "torch.nn.parameter.Parameter",
        "torch.nn.parameter.Buffer",
        "torch.serialization._get_layout",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        "torch.qscheme",
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy.dtypes.Float64DType",
        "numpy.dtypes.Float32DType",
        "numpy.dtypes.Int64DType",
        "numpy.dtypes.Int32DType",
        "_codecs.encode",
        "builtins.set",
        "builtins.frozenset",
        "builtins.bytearray",
        "builtins.complex",
        "collections.OrderedDict",
        "collections.Counter",
        "torch.Size",
        "torch.device",
        "argparse.Namespace",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "datetime.datetime",
        "datetime.date",
        "datetime.timedelta",
        "decimal.Decimal",
        "fractions.Fraction",
        "uuid.UUID",
    };
    if (module == "torch._utils" && name.starts_with("_rebuild_"))
        return true;
    if (module == "torch._tensor" && name == "_rebuild_from_type_v2")
        return true;
    if (module == "torch.jit._pickle")
        return true;
    if (module.starts_with(
            "__torch__")) // TorchScript classes: described by the archive's code/, never imported here
        return true;
    if ((module == "torch" || module == "torch.cuda" || module == "torch.storage") &&
        (name.ends_with("Storage") || name.ends_with("Tensor")))
        return true;
    if (module == "torch" && (dtypeFromName(name) || name.starts_with("per_")))
        return true;
    return kSafe.count(module + "." + name) > 0;
}

std::string joinPath(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
}

std::string latin1FromUtf8(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            out.push_back(static_cast<char>(c));
        } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
            out.push_back(
                static_cast<char>(((c & 0x1F) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3F)));
            ++i;
        } else {
            out.push_back('?');
        }
    }
    return out;
}

} // namespace

bool isDangerousGlobal(std::string_view module, std::string_view name) {
    static constexpr std::array<std::string_view, 34> kModules{"os",
                                                               "posix",
                                                               "nt",
                                                               "subprocess",
                                                               "_posixsubprocess",
                                                               "sys",
                                                               "socket",
                                                               "runpy",
                                                               "importlib",
                                                               "marshal",
                                                               "types",
                                                               "pty",
                                                               "shutil",
                                                               "pickle",
                                                               "_pickle",
                                                               "ctypes",
                                                               "webbrowser",
                                                               "code",
                                                               "codeop",
                                                               "pdb",
                                                               "pip",
                                                               "commands",
                                                               "httplib",
                                                               "http",
                                                               "requests",
                                                               "urllib",
                                                               "aiohttp",
                                                               "asyncio",
                                                               "multiprocessing",
                                                               "signal",
                                                               "tempfile",
                                                               "platform",
                                                               "threading",
                                                               "_thread"};
    const std::string_view top = module.substr(0, module.find('.'));
    for (auto m : kModules)
        if (top == m)
            return true;
    static constexpr std::array<std::string_view, 16> kBuiltins{
        "eval",  "exec",     "compile", "open",       "getattr", "setattr", "delattr", "__import__",
        "apply", "execfile", "input",   "breakpoint", "globals", "locals",  "vars",    "memoryview"};
    if (module == "builtins")
        for (auto n : kBuiltins)
            if (name == n)
                return true;
    if (module == "functools" && name == "partial")
        return true;
    if (module == "operator" && (name == "attrgetter" || name == "itemgetter" || name == "methodcaller"))
        return true;
    if ((module == "torch" || module == "torch.serialization") && (name == "load" || name == "save"))
        return true;
    if (module == "torch._C" || module.starts_with("torch._C.") || module == "torch.hub" ||
        module == "torch.jit")
        return true;
    if (module.starts_with("numpy") && (name == "load" || name == "runstring" || name == "fromfile"))
        return true;
    return false;
}

TorchPickleHooks::TorchPickleHooks(Checkpoint& checkpoint)
    : m_ck(checkpoint) {
    m_storageByKey.reserve(1024);
}

Value* TorchPickleHooks::global(ValueArena& arena, std::string_view module, std::string_view name,
                                std::uint64_t offset) {
    Value* g = PickleHooks::global(arena, module, name, offset);
    const std::string m(module), n(name);
    g->plainData = isPlainDataGlobal(m, n);
    if (g->plainData)
        return g;
    const std::string qname = m + "." + n;
    g->dangerous = isDangerousGlobal(module, name);
    if (!m_globalFindings.count(qname)) {
        Finding f;
        f.severity = Severity::Security;
        f.global = qname;
        f.offset = offset;
        f.message = g->dangerous ? "references " + qname + ", a known way to run code; it was not run"
                                 : "references " + qname +
                                       ", which is not a known data type; it is shown as an "
                                       "opaque object and was never imported";
        m_globalFindings.emplace(qname, m_ck.findings.size());
        m_ck.findings.push_back(std::move(f));
    }
    return g;
}

int TorchPickleHooks::findStorage(const std::string& key) const {
    std::uint32_t number = 0;
    const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), number);
    if (ec == std::errc() && end == key.data() + key.size() && number < m_storageByNumber.size() &&
        m_storageByNumber[number] >= 0 && std::to_string(number) == key)
        return m_storageByNumber[number];
    const auto it = m_storageByKey.find(m_namespace + key);
    return it == m_storageByKey.end() ? -1 : it->second;
}

Value* TorchPickleHooks::makeTensor(ValueArena& arena, TensorInfo proto, std::uint64_t offset) {
    Value* t = arena.make(ValueKind::Tensor);
    (void)offset;
    t->integer = static_cast<std::int64_t>(m_ck.prototypes.size());
    proto.proto = static_cast<int>(m_ck.prototypes.size());
    m_ck.prototypes.push_back(std::move(proto));
    return t;
}

Value* TorchPickleHooks::rebuildStrided(ValueArena& arena, const Value* storage, const Value* offset,
                                        const Value* size, const Value* stride, std::optional<DType> dtype,
                                        std::uint64_t at) {
    TensorInfo t;
    auto bad = [&](const std::string& why) {
        t.error = why;
        return makeTensor(arena, std::move(t), at);
    };
    if (!storage || storage->kind != ValueKind::Storage)
        return bad("tensor rebuild without a storage");
    const StorageInfo& s = m_ck.storages[static_cast<std::size_t>(storage->integer)];
    t.storage = static_cast<int>(storage->integer);
    t.device = s.device;
    t.dtype = dtype.value_or(s.dtype);
    if (!isInt(offset) || offset->integer < 0)
        return bad("storage offset is not a non-negative integer");
    t.storageOffset = offset->integer;
    if (!isTuple(size) || !isTuple(stride) || size->items.size() != stride->items.size())
        return bad("size and stride are not tuples of the same length");
    if (size->items.size() > kMaxDims)
        return bad("tensor has " + std::to_string(size->items.size()) + " dimensions (limit 64)");
    for (std::size_t i = 0; i < size->items.size(); ++i) {
        const Value* d = size->items[i];
        const Value* st = stride->items[i];
        if (!isInt(d) || d->integer < 0 || !isInt(st) || st->integer < 0)
            return bad("size or stride holds a negative or non-integer value");
        t.shape.push_back(d->integer);
        t.strides.push_back(st->integer);
    }
    std::uint64_t numel = 1;
    for (auto d : t.shape)
        if (mulOverflow(numel, static_cast<std::uint64_t>(d), &numel))
            return bad("element count overflows 64 bits");
    std::uint64_t bytes = 0;
    if (mulOverflow(numel, dtypeSize(t.dtype), &bytes))
        return bad("byte size overflows 64 bits");
    return makeTensor(arena, std::move(t), at);
}

Value* TorchPickleHooks::persistentLoad(ValueArena& arena, Value* pid, std::uint64_t offset) {
    // Legacy whole-module saves: ('module', class, source file, source). The class was recorded by its
    // GLOBAL; the source text is data, and nothing here runs it.
    if (pid && pid->kind == ValueKind::Tuple && pid->items.size() >= 2 &&
        (pid->items[0]->kind == ValueKind::String || pid->items[0]->kind == ValueKind::Bytes) &&
        pid->items[0]->text == "module")
        return pid->items[1];
    // ('storage', storage_type, key, location, numel[, view_metadata])
    if (!pid || pid->kind != ValueKind::Tuple || pid->items.size() < 5 ||
        (pid->items[0]->kind != ValueKind::String && pid->items[0]->kind != ValueKind::Bytes) ||
        pid->items[0]->text != "storage")
        throw Error(ErrorCode::Malformed,
                    "persistent id is not a ('storage', type, key, location, size) tuple", {}, offset);
    const Value* type = pid->items[1];
    const Value* key = pid->items[2];
    const Value* location = pid->items[3];
    const Value* numel = pid->items[4];
    if (key->kind != ValueKind::String && key->kind != ValueKind::Bytes && key->kind != ValueKind::Int)
        throw Error(ErrorCode::Malformed, "storage key is not a string", {}, offset);
    const std::string keyText = key->kind == ValueKind::Int ? std::to_string(key->integer) : key->text;
    int index = findStorage(keyText);
    if (index < 0) {
        StorageInfo s;
        s.key = keyText;
        s.device =
            location->kind == ValueKind::String || location->kind == ValueKind::Bytes ? location->text : "?";
        std::optional<DType> dt;
        if (type->kind == ValueKind::Global)
            dt = type->name() == "UntypedStorage" ? std::optional<DType>(DType::UInt8)
                                                  : dtypeFromStorageName(type->name());
        if (!dt)
            throw Error(ErrorCode::Malformed, "storage '" + keyText + "' has unknown type " + valueRepr(type),
                        {}, offset);
        s.dtype = *dt;
        if (!isInt(numel) || numel->integer < 0)
            throw Error(ErrorCode::Malformed, "storage '" + keyText + "' has an invalid size", {}, offset);
        if (mulOverflow(static_cast<std::uint64_t>(numel->integer), dtypeSize(s.dtype), &s.nbytes))
            throw Error(ErrorCode::Malformed, "storage '" + keyText + "' size overflows 64 bits", {}, offset);
        s.space = m_space;
        index = static_cast<int>(m_ck.storages.size());
        m_ck.storages.push_back(std::move(s));
        std::uint32_t number = 0;
        const auto [end, ec] = std::from_chars(keyText.data(), keyText.data() + keyText.size(), number);
        if (ec == std::errc() && end == keyText.data() + keyText.size() && number < (1u << 24) &&
            std::to_string(number) == keyText) {
            if (number >= m_storageByNumber.size())
                m_storageByNumber.resize(std::max<std::size_t>(number + 1, m_storageByNumber.size() * 2), -1);
            m_storageByNumber[number] = index;
        } else {
            m_storageByKey.emplace(m_namespace + keyText, index);
        }
    }
    const int storageIndex = index;
    if (pid->items.size() == 5 && !pid->shared)
        arena.recycle(pid->items[2]); // the key text was copied; the tuple itself is recycled by the caller
    Value* v = arena.make(ValueKind::Storage);
    v->integer = storageIndex;
    // Legacy views: (view_key, offset, size) into the storage named by `key`.
    if (pid->items.size() >= 6 && pid->items[5]->kind == ValueKind::Tuple &&
        pid->items[5]->items.size() == 3) {
        const Value* vk = pid->items[5]->items[0];
        const Value* vo = pid->items[5]->items[1];
        const Value* vs = pid->items[5]->items[2];
        if (isInt(vo) && isInt(vs) && vo->integer >= 0 && vs->integer >= 0) {
            const StorageInfo root = m_ck.storages[static_cast<std::size_t>(storageIndex)];
            StorageInfo view = root;
            (void)vk;
            const std::uint64_t el = dtypeSize(root.dtype);
            const auto vOff = static_cast<std::uint64_t>(vo->integer);
            const auto vLen = static_cast<std::uint64_t>(vs->integer);
            if (vOff > root.nbytes / el || vLen > root.nbytes / el - vOff)
                view.error = "storage view lies outside storage '" + root.key + "'";
            view.nbytes = vLen * el;
            view.fileOffset = vOff * el; // relative to the root until the container locates it
            view.key = keyText + "@" + std::to_string(vOff * el);
            view.viewOf = storageIndex;
            v->integer = static_cast<std::int64_t>(m_ck.storages.size());
            m_ck.storages.push_back(std::move(view));
        }
    }
    return v;
}

Value* TorchPickleHooks::callKnown(ValueArena& arena, const std::string& qname, Value* callable, Value* args,
                                   CallKind how, std::uint64_t offset, bool* handled) {
    *handled = true;
    const Value* a0 = arg(args, 0);
    const Value* a1 = arg(args, 1);
    if (qname == "torch._utils._rebuild_tensor_v2" || qname == "torch._utils._rebuild_tensor") {
        Value* t = rebuildStrided(arena, a0, a1, arg(args, 2), arg(args, 3), std::nullopt, offset);
        if (const Value* rg = arg(args, 4); rg && rg->kind == ValueKind::Bool)
            m_ck.prototypes[static_cast<std::size_t>(t->integer)].requiresGrad = rg->boolean;
        // Size, stride and hooks were copied into the tensor; nothing else refers to them unless they or
        // the argument tuple are shared (memoized, or copied by tuple() and the like).
        if (!args->shared)
            for (std::size_t i = 2; i < args->items.size(); ++i)
                arena.recycle(args->items[i]);
        return t;
    }
    if (qname == "torch._utils._rebuild_tensor_v3") {
        std::optional<DType> dt;
        if (const Value* d = arg(args, 6); d && d->kind == ValueKind::Global)
            dt = dtypeFromName(d->name());
        Value* t = rebuildStrided(arena, a0, a1, arg(args, 2), arg(args, 3), dt, offset);
        auto& p = m_ck.prototypes[static_cast<std::size_t>(t->integer)];
        if (!dt && p.error.empty())
            p.error = "unknown dtype " + valueRepr(arg(args, 6));
        if (const Value* rg = arg(args, 4); rg && rg->kind == ValueKind::Bool)
            p.requiresGrad = rg->boolean;
        return t;
    }
    if (qname == "torch._utils._rebuild_parameter" || qname == "torch._utils._rebuild_parameter_with_state" ||
        qname == "torch.nn.parameter.Parameter" || qname == "torch.nn.parameter.Buffer") {
        if (a0 && a0->kind == ValueKind::Tensor) {
            auto& p = m_ck.prototypes[static_cast<std::size_t>(a0->integer)];
            p.isParameter = qname != "torch.nn.parameter.Buffer";
            if (a1 && a1->kind == ValueKind::Bool)
                p.requiresGrad = a1->boolean;
            else if (qname == "torch.nn.parameter.Parameter" && !a1)
                p.requiresGrad = true;
            return const_cast<Value*>(a0);
        }
        *handled = false;
        return nullptr;
    }
    if (qname == "torch._utils._rebuild_qtensor") {
        // (storage, offset, size, stride, quantizer_params, requires_grad, backward_hooks)
        Value* t = rebuildStrided(arena, a0, a1, arg(args, 2), arg(args, 3), std::nullopt, offset);
        auto& p = m_ck.prototypes[static_cast<std::size_t>(t->integer)];
        const Value* q = arg(args, 4);
        if (q && q->kind == ValueKind::Tuple && !q->items.empty() && q->items[0]->kind == ValueKind::Global) {
            const std::string scheme(q->items[0]->name());
            if ((scheme == "per_tensor_affine" || scheme == "per_tensor_symmetric") && q->items.size() >= 3) {
                p.quant.scheme = QuantInfo::Scheme::PerTensorAffine;
                p.quant.scale = q->items[1]->kind == ValueKind::Float
                                    ? q->items[1]->real
                                    : static_cast<double>(q->items[1]->integer);
                p.quant.zeroPoint = q->items[2]->integer;
            } else if (scheme.starts_with("per_channel") && q->items.size() >= 4 &&
                       q->items[1]->kind == ValueKind::Tensor && q->items[2]->kind == ValueKind::Tensor &&
                       isInt(q->items[3])) {
                p.quant.scheme = QuantInfo::Scheme::PerChannelAffine;
                p.quant.scalesTensor = static_cast<int>(q->items[1]->integer);
                p.quant.zeroPointsTensor = static_cast<int>(q->items[2]->integer);
                const std::int64_t axis = q->items[3]->integer;
                if (axis < 0 || static_cast<std::uint64_t>(axis) >= std::max<std::size_t>(p.shape.size(), 1))
                    p.error = "quantization axis out of range";
                else
                    p.quant.axis = static_cast<int>(axis);
            } else {
                p.error = "unsupported quantization scheme " + scheme;
            }
        } else if (p.error.empty()) {
            p.error = "quantization parameters are not readable";
        }
        if (const Value* rg = arg(args, 5); rg && rg->kind == ValueKind::Bool)
            p.requiresGrad = rg->boolean;
        return t;
    }
    if (qname == "torch._utils._rebuild_sparse_tensor" ||
        qname == "torch._utils._rebuild_sparse_csr_tensor") {
        // (layout, (indices, values, size[, coalesced])) or CSR (crow, col, values, size)
        TensorInfo t;
        const Value* data = a1;
        const bool csr = qname.ends_with("csr_tensor") ||
                         (a0 && a0->kind == ValueKind::String && a0->text.find("csr") != std::string::npos);
        t.layout = csr ? Layout::SparseCsr : Layout::SparseCoo;
        const std::size_t sizeAt =
            csr ? 3 : 2; // COO (indices, values, size, ...), CSR (crow, col, values, size)
        const bool complete = data && data->isContainer() && data->items.size() > sizeAt;
        const Value* values = complete ? data->items[csr ? 2 : 1] : nullptr;
        const Value* size = complete ? data->items[sizeAt] : nullptr;
        if (values && values->kind == ValueKind::Tensor) {
            const auto& vp = m_ck.prototypes[static_cast<std::size_t>(values->integer)];
            t.dtype = vp.dtype;
            t.device = vp.device;
        }
        if (isTuple(size))
            for (const Value* d : size->items)
                t.shape.push_back(isInt(d) ? d->integer : 0);
        t.strides.assign(t.shape.size(), 0);
        return makeTensor(arena, std::move(t),
                          offset); // listed with its layout; it has no dense data to read
    }
    if (qname == "torch._utils._rebuild_meta_tensor_no_storage" ||
        qname == "torch._utils._rebuild_wrapper_subclass") {
        const bool wrapper = qname.ends_with("subclass");
        const Value* dt = arg(args, wrapper ? 1 : 0);
        const Value* size = arg(args, wrapper ? 2 : 1);
        const Value* stride = arg(args, wrapper ? 3 : 2);
        TensorInfo t;
        t.layout = Layout::Meta;
        t.device = "meta";
        if (wrapper) {
            if (const Value* dev = arg(args, 6))
                t.device = dev->kind == ValueKind::String ? dev->text : valueRepr(dev);
            if (a0 && a0->kind == ValueKind::Global)
                t.typeName = a0->qualifiedName();
        }
        if (dt && dt->kind == ValueKind::Global)
            if (auto d = dtypeFromName(dt->name()))
                t.dtype = *d;
        if (isTuple(size))
            for (const Value* d : size->items)
                t.shape.push_back(isInt(d) ? std::max<std::int64_t>(d->integer, 0) : 0);
        if (isTuple(stride))
            for (const Value* d : stride->items)
                t.strides.push_back(isInt(d) ? d->integer : 0);
        t.strides.resize(t.shape.size(), 0);
        return makeTensor(arena, std::move(t), offset); // saved without data, which is not an error
    }
    if (qname == "torch._utils._rebuild_device_tensor_from_cpu_tensor") {
        if (a0 && a0->kind == ValueKind::Tensor) {
            auto& p = m_ck.prototypes[static_cast<std::size_t>(a0->integer)];
            if (const Value* dev = arg(args, 2); dev && dev->kind == ValueKind::String)
                p.device = dev->text;
            return const_cast<Value*>(a0);
        }
        *handled = false;
        return nullptr;
    }
    if (qname == "torch._tensor._rebuild_from_type_v2") {
        // (func, new_type, args, state): func(*args), then as_subclass(new_type)
        const Value* func = a0;
        const Value* fargs = arg(args, 2);
        if (func && func->kind == ValueKind::Global && fargs && fargs->kind == ValueKind::Tuple) {
            // func may be _rebuild_from_type_v2 again, with arguments of its own: nested in the file, so
            // bounded (PyTorch writes one level).
            if (m_rebuildDepth >= kMaxRebuildDepth)
                throw Error(ErrorCode::Limit,
                            "_rebuild_from_type_v2 nested deeper than " + std::to_string(kMaxRebuildDepth) +
                                " levels",
                            {}, offset);
            ++m_rebuildDepth;
            Value* inner = nullptr;
            try {
                inner = call(arena, const_cast<Value*>(func), const_cast<Value*>(fargs), how, offset);
            } catch (...) {
                --m_rebuildDepth;
                throw;
            }
            --m_rebuildDepth;
            if (inner && inner->kind == ValueKind::Tensor && a1 && a1->kind == ValueKind::Global) {
                auto& p = m_ck.prototypes[static_cast<std::size_t>(inner->integer)];
                const std::string type = a1->qualifiedName();
                if (type == "torch.nn.parameter.Parameter")
                    p.isParameter = true;
                else if (type != "torch.Tensor")
                    p.typeName = type;
            }
            return inner;
        }
        *handled = false;
        return nullptr;
    }
    if (qname == "collections.OrderedDict" || qname == "collections.Counter" || qname == "builtins.dict" ||
        qname == "collections.defaultdict") {
        Value* d = arena.make(ValueKind::Dict);
        d->isOrderedDict = qname == "collections.OrderedDict";
        if (qname != "collections.defaultdict" && a0 &&
            (a0->kind == ValueKind::List || a0->kind == ValueKind::Tuple)) {
            std::vector<Value*> keysAndValues;
            for (const Value* pair : a0->items)
                if (pair->kind == ValueKind::Tuple && pair->items.size() == 2) {
                    keysAndValues.push_back(pair->items[0]);
                    keysAndValues.push_back(pair->items[1]);
                }
            arena.copyItems(d, keysAndValues, offset);
        }
        if (a0 && a0->kind == ValueKind::Dict && qname != "collections.defaultdict")
            arena.copyItems(d, a0->items, offset);
        return d;
    }
    if (qname == "builtins.set" || qname == "builtins.frozenset") {
        Value* s = arena.make(ValueKind::Set);
        s->isFrozen = qname == "builtins.frozenset";
        if (a0 && (a0->kind == ValueKind::List || a0->kind == ValueKind::Tuple || a0->kind == ValueKind::Set))
            arena.copyItems(s, a0->items, offset);
        return s;
    }
    if (qname == "torch.Size" || qname == "builtins.tuple") {
        Value* t = arena.make(ValueKind::Tuple);
        if (a0 && (a0->kind == ValueKind::Tuple || a0->kind == ValueKind::List))
            arena.copyItems(t, a0->items, offset);
        return t;
    }
    if (qname == "builtins.list") {
        Value* l = arena.make(ValueKind::List);
        if (a0 && (a0->kind == ValueKind::Tuple || a0->kind == ValueKind::List))
            arena.copyItems(l, a0->items, offset);
        return l;
    }
    if (qname == "torch.device") {
        std::string dev = a0 && a0->kind == ValueKind::String ? a0->text : "?";
        if (isInt(a1))
            dev += ":" + std::to_string(a1->integer);
        return arena.makeString(dev);
    }
    if (qname == "_codecs.encode" && a0 && a0->kind == ValueKind::String) {
        Value* b = arena.make(ValueKind::Bytes);
        const std::string enc = a1 && a1->kind == ValueKind::String ? a1->text : "utf-8";
        b->text = enc == "latin1" || enc == "latin-1" ? latin1FromUtf8(a0->text) : a0->text;
        return b;
    }
    if (qname == "builtins.bytearray" || qname == "builtins.bytes") {
        Value* b = arena.make(ValueKind::Bytes);
        if (a0 && (a0->kind == ValueKind::Bytes || a0->kind == ValueKind::String))
            b->text = a0->text;
        return b;
    }
    if (qname == "builtins.complex") {
        Value* c = arena.make(ValueKind::Complex);
        auto num = [](const Value* v) {
            return !v ? 0.0 : v->kind == ValueKind::Float ? v->real : static_cast<double>(v->integer);
        };
        c->real = num(a0);
        c->setImag(num(a1));
        return c;
    }
    if (qname == "torch.serialization._get_layout" && a0 && a0->kind == ValueKind::String)
        return arena.makeString(a0->text);
    if (callable->module() == "torch.jit._pickle") {
        // build_intlist / build_tensorlist / restore_type_tag ...: the first argument is the value.
        if (a0)
            return const_cast<Value*>(a0);
        return arena.none();
    }
    if ((qname == "numpy.core.multiarray.scalar" || qname == "numpy._core.multiarray.scalar") && a0 && a1 &&
        a1->kind == ValueKind::Bytes && a0->kind == ValueKind::Object && !a0->items.empty() &&
        a0->items[0]->kind == ValueKind::String) {
        // numpy scalar: dtype code ('f8', 'i8', ...) and its little-endian bytes.
        const std::string& code = a0->items[0]->text;
        const std::string& raw = a1->text;
        auto load = [&](auto sample) {
            using T = decltype(sample);
            T v{};
            std::memcpy(&v, raw.data(), sizeof(T));
            return v;
        };
        if (code == "f8" && raw.size() == 8) {
            Value* f = arena.make(ValueKind::Float);
            f->real = load(double{});
            return f;
        }
        if (code == "f4" && raw.size() == 4) {
            Value* f = arena.make(ValueKind::Float);
            f->real = load(float{});
            return f;
        }
        if (code == "i8" && raw.size() == 8)
            return arena.makeInt(load(std::int64_t{}));
        if (code == "i4" && raw.size() == 4)
            return arena.makeInt(load(std::int32_t{}));
        if (code == "b1" && raw.size() == 1)
            return arena.boolean(raw[0] != 0);
    }
    *handled = false;
    return nullptr;
}

Value* TorchPickleHooks::call(ValueArena& arena, Value* callable, Value* args, CallKind how,
                              std::uint64_t offset) {
    if (callable && callable->kind == ValueKind::Global) {
        const std::string qname = callable->qualifiedName();
        bool handled = false;
        if (callable->plainData) {
            Value* v = callKnown(arena, qname, callable, args, how, offset, &handled);
            if (handled)
                return v;
        }
        if (qname == "copyreg._reconstructor" && args && !args->items.empty() &&
            args->items[0]->kind == ValueKind::Global) {
            // object.__new__(cls): the object is of class args[0], which was checked on its own.
            Value* obj = PickleHooks::call(arena, args->items[0], args, how, offset);
            obj->items.clear();
            return obj;
        }
        // Not a known data constructor: an opaque record of the attempted call.
        if (auto it = m_globalFindings.find(qname); it != m_globalFindings.end()) {
            Finding& f = m_ck.findings[it->second];
            const char* op = how == CallKind::Reduce   ? "REDUCE"
                             : how == CallKind::NewObj ? "NEWOBJ"
                             : how == CallKind::Inst   ? "INST"
                                                       : "OBJ";
            const std::string callText = qname + valueRepr(args, 120);
            f.message = callable->dangerous ? "tries to call " + callText + " (via " + op +
                                                  "), a known way to run code; it was not run"
                                            : "instantiates " + qname + " (via " + op +
                                                  "), which is not a known data type; shown as "
                                                  "an opaque object, nothing was imported or run";
            f.offset = offset;
        }
    }
    return PickleHooks::call(arena, callable, args, how, offset);
}

void TorchPickleHooks::build(ValueArena& arena, Value* object, Value* state, std::uint64_t offset) {
    // Pre-0.4 tensors: a tensor class instantiated empty, then BUILD with (storage, offset, size, stride).
    if (object->kind == ValueKind::Object &&
        (object->module() == "torch" || object->module() == "torch.cuda") &&
        dtypeFromTensorClassName(object->name()) && state && state->kind == ValueKind::Tuple &&
        state->items.size() >= 4) {
        Value* t = rebuildStrided(arena, state->items[0], state->items[1], state->items[2], state->items[3],
                                  dtypeFromTensorClassName(object->name()), offset);
        object->kind = ValueKind::Tensor;
        object->integer = t->integer;
        return;
    }
    if (object->kind == ValueKind::Tensor) // tensor subclass attributes or Parameter state: not data
        return;
    PickleHooks::build(arena, object, state, offset);
}

// ---------------------------------------------------------------------------------------------------------

namespace {

constexpr int kMaxDepth = 400;
constexpr std::size_t kMaxVisits = 50'000'000;
// A container the pickle refers to from several places (a state dict saved as both `model` and `ema`) is
// listed under each name, up to this many; beyond it, it is one value. Without the cap, a chain of shared
// containers each referring twice to the next lists 2^depth names from a file of a few hundred bytes.
constexpr std::uint32_t kMaxExpansions = 16;

bool isScalarLeaf(const Value* v) {
    switch (v->kind) {
    case ValueKind::None:
    case ValueKind::Bool:
    case ValueKind::Int:
    case ValueKind::BigInt:
    case ValueKind::Float:
    case ValueKind::Complex:
    case ValueKind::String:
    case ValueKind::Bytes:
    case ValueKind::Global:
        return true;
    default:
        return false;
    }
}

const Value* dictGet(const Value* dict, std::string_view key) {
    if (!dict || dict->kind != ValueKind::Dict)
        return nullptr;
    for (std::size_t i = 0; i + 1 < dict->items.size(); i += 2)
        if (dict->items[i]->kind == ValueKind::String && dict->items[i]->text == key)
            return dict->items[i + 1];
    return nullptr;
}

class Walker {
public:
    Walker(Checkpoint& ck, const std::unordered_map<std::string, std::size_t>& findings)
        : m_ck(ck)
        , m_findings(findings) {}

    void walk(const Value* v, const std::string& path, int depth) {
        if (++m_visits > kMaxVisits) {
            warnOnce(m_budgetWarned, "the object tree is too large; names beyond " +
                                         std::to_string(kMaxVisits) + " visited nodes are not listed");
            return;
        }
        if (depth > kMaxDepth) {
            warnOnce(m_depthWarned, "objects nested deeper than " + std::to_string(kMaxDepth) +
                                        " levels are not listed (at " + path + ")");
            return;
        }
        switch (v->kind) {
        case ValueKind::Tensor: {
            // Most tensors have one name: move the record; a second name (an alias) copies the first.
            const auto p = static_cast<std::size_t>(v->integer);
            int& first = m_ck.protoToTensor[p];
            if (first < 0) {
                first = static_cast<int>(m_ck.tensors.size());
                m_ck.tensors.push_back(std::move(m_ck.prototypes[p]));
            } else {
                m_ck.tensors.push_back(m_ck.tensors[static_cast<std::size_t>(first)]);
            }
            m_ck.tensors.back().name = path;
            return;
        }
        case ValueKind::Dict:
        case ValueKind::List:
        case ValueKind::Tuple:
        case ValueKind::Set:
        case ValueKind::Object:
            break;
        default:
            if (v->kind == ValueKind::Global)
                noteObject(v, path);
            m_ck.values.push_back({path, v});
            return;
        }
        if (!m_active.insert(v).second) {
            warnOnce(m_cycleWarned, "the object graph contains a cycle (at " + path + "); it is listed once");
            return;
        }
        if (v->shared && ++m_expansions[v] > kMaxExpansions) {
            m_active.erase(v);
            warnOnce(m_sharedWarned, "an object referred to from more than " +
                                         std::to_string(kMaxExpansions) +
                                         " places is listed in full under the first " +
                                         std::to_string(kMaxExpansions) + " (again at " + path + ")");
            m_ck.values.push_back({path, v});
            return;
        }
        if (v->kind == ValueKind::Dict) {
            for (std::size_t i = 0; i + 1 < v->items.size(); i += 2)
                walk(v->items[i + 1], joinPath(path, keyText(v->items[i])), depth + 1);
        } else if (v->kind == ValueKind::Object) {
            walkObject(v, path, depth);
        } else if (std::all_of(v->items.begin(), v->items.end(), isScalarLeaf) && !v->items.empty()) {
            m_ck.values.push_back({path, v}); // [0, 1, 2], (0.9, 0.999): one value, not one per item
        } else {
            for (std::size_t i = 0; i < v->items.size(); ++i)
                walk(v->items[i], joinPath(path, std::to_string(i)), depth + 1);
            if (v->items.empty())
                m_ck.values.push_back({path, v});
        }
        m_active.erase(v);
    }

private:
    void walkObject(const Value* v, const std::string& path, int depth) {
        noteObject(v, path);
        const Value* state = v->state;
        // A pickled nn.Module: name its tensors as state_dict() does (parameters, buffers, then children).
        const Value* params = dictGet(state, "_parameters");
        const Value* modules = dictGet(state, "_modules");
        if (params && modules) {
            for (const char* group : {"_parameters", "_buffers", "_modules"}) {
                const Value* d = dictGet(state, group);
                if (!d)
                    continue;
                for (std::size_t i = 0; i + 1 < d->items.size(); i += 2) {
                    if (d->items[i + 1]->kind == ValueKind::None)
                        continue; // an unset optional parameter (bias=False)
                    walk(d->items[i + 1], joinPath(path, keyText(d->items[i])), depth + 1);
                }
            }
            for (std::size_t i = 0; i + 1 < state->items.size(); i += 2) {
                const std::string key = keyText(state->items[i]);
                if (key.starts_with("_") || key == "training")
                    continue;
                walk(state->items[i + 1], joinPath(path, key), depth + 1);
            }
            return;
        }
        if (state && state->kind == ValueKind::Dict) {
            for (std::size_t i = 0; i + 1 < state->items.size(); i += 2)
                walk(state->items[i + 1], joinPath(path, keyText(state->items[i])), depth + 1);
            return;
        }
        if (state && state->kind == ValueKind::Tuple && state->items.size() == 2) { // (dict, slots)
            for (const Value* part : state->items)
                if (part->kind == ValueKind::Dict)
                    for (std::size_t i = 0; i + 1 < part->items.size(); i += 2)
                        walk(part->items[i + 1], joinPath(path, keyText(part->items[i])), depth + 1);
            return;
        }
        if (!state && !v->items.empty()) {
            for (std::size_t i = 0; i < v->items.size(); ++i)
                if (!isScalarLeaf(v->items[i]) || v->items[i]->kind == ValueKind::Global)
                    walk(v->items[i], joinPath(path, std::to_string(i)), depth + 1);
        }
        m_ck.values.push_back({path, v});
    }

    void noteObject(const Value* v, const std::string& path) {
        const auto it = m_findings.find(v->qualifiedName());
        if (it != m_findings.end() && m_ck.findings[it->second].object.empty())
            m_ck.findings[it->second].object = path.empty() ? "(root)" : path;
    }

    void warnOnce(bool& flag, const std::string& message) {
        if (flag)
            return;
        flag = true;
        m_ck.findings.push_back({Severity::Warning, message, {}, {}, {}, 0});
    }

    Checkpoint& m_ck;
    const std::unordered_map<std::string, std::size_t>& m_findings;
    std::unordered_set<const Value*> m_active;
    std::size_t m_visits = 0;
    bool m_budgetWarned = false, m_depthWarned = false, m_cycleWarned = false, m_sharedWarned = false;
    std::unordered_map<const Value*, std::uint32_t> m_expansions; // shared containers: times listed
};

} // namespace

void walkTree(Checkpoint& checkpoint, const std::unordered_map<std::string, std::size_t>& globalFindings) {
    if (!checkpoint.root)
        return;
    checkpoint.protoToTensor.assign(checkpoint.prototypes.size(), -1);
    checkpoint.tensors.reserve(checkpoint.prototypes.size());
    Walker w(checkpoint, globalFindings);
    w.walk(checkpoint.root, "", 0);
}

std::shared_ptr<Checkpoint> newCheckpoint(std::shared_ptr<const MappedFile> file, std::string format) {
    auto ck = std::make_shared<Checkpoint>();
    ck->sources.push_back({file->path(), std::move(file)});
    ck->arena = std::make_shared<ValueArena>();
    ck->format = std::move(format);
    return ck;
}

void finishTorchCheckpoint(Checkpoint& ck, const TorchPickleHooks& hooks, const Value* constants) {
    walkTree(ck, hooks.globalFindings());
    if (constants && !constants->items.empty()) {
        Walker w(ck, hooks.globalFindings());
        w.walk(constants, "__constants__", 0);
    }
    checkTensorExtents(ck);
    compactPrototypes(ck);
}

void checkTensorExtents(Checkpoint& ck) {
    std::vector<bool> reported(ck.storages.size(), false);
    auto check = [&](TensorInfo& t, bool report) {
        if (!t.error.empty() || t.storage < 0 || t.layout != Layout::Strided)
            return;
        const StorageInfo& s = ck.storages[static_cast<std::size_t>(t.storage)];
        if (!s.error.empty()) {
            t.error = s.error;
            if (report && !reported[static_cast<std::size_t>(t.storage)]) {
                reported[static_cast<std::size_t>(t.storage)] = true;
                ck.findings.push_back({Severity::Error,
                                       s.error,
                                       t.name,
                                       {},
                                       s.error.empty() ? std::optional<std::uint64_t>{}
                                                       : std::optional<std::uint64_t>{s.fileOffset},
                                       s.source});
            }
            return;
        }
        if (t.numel() == 0)
            return;
        // Highest element index the view touches, overflow-checked: (offset + sum((size-1)*stride) + 1) *
        // elsize.
        std::uint64_t last = static_cast<std::uint64_t>(t.storageOffset);
        bool overflow = false;
        for (std::size_t i = 0; i < t.shape.size(); ++i) {
            std::uint64_t span = 0;
            overflow |= mulOverflow(static_cast<std::uint64_t>(t.shape[i] - 1),
                                    static_cast<std::uint64_t>(t.strides[i]), &span);
            overflow |= addOverflow(last, span, &last);
        }
        std::uint64_t need = 0;
        overflow |= addOverflow(last, 1, &last);
        overflow |= mulOverflow(last, dtypeSize(t.dtype), &need);
        if (overflow || need > s.nbytes) {
            t.error = "view needs " + (overflow ? std::string("more than 2^64") : std::to_string(need)) +
                      " bytes of storage '" + s.key + "', which holds " + std::to_string(s.nbytes);
            if (report)
                ck.findings.push_back({Severity::Error, t.error, t.name, {}, s.fileOffset, s.source});
        }
    };
    for (std::size_t i = 0; i < ck.prototypes.size(); ++i)
        if (i >= ck.protoToTensor.size() || ck.protoToTensor[i] < 0) // the others moved into `tensors`
            check(ck.prototypes[i], false);
    for (auto& t : ck.tensors)
        check(t, true);
}

} // namespace ckpt

namespace ckpt {

void resolveStorageViews(Checkpoint& ck) {
    for (auto& s : ck.storages) {
        if (s.viewOf < 0)
            continue;
        const StorageInfo& root = ck.storages[static_cast<std::size_t>(s.viewOf)];
        if (!root.error.empty())
            s.error = root.error;
        if (s.error.empty())
            s.fileOffset += root.fileOffset;
    }
}

const TensorInfo& prototype(const Checkpoint& ck, std::size_t index) {
    if (index < ck.protoToTensor.size() && ck.protoToTensor[index] >= 0)
        return ck.tensors[static_cast<std::size_t>(ck.protoToTensor[index])];
    return ck.prototypes.at(index);
}

void compactPrototypes(Checkpoint& ck) {
    std::map<int, TensorInfo> keep;
    for (const auto& t : ck.tensors)
        if (t.quant.scheme == QuantInfo::Scheme::PerChannelAffine)
            for (int i : {t.quant.scalesTensor, t.quant.zeroPointsTensor})
                if (i >= 0 && static_cast<std::size_t>(i) < ck.prototypes.size())
                    keep.emplace(i, prototype(ck, static_cast<std::size_t>(i)));
    ck.prototypes.clear();
    ck.prototypes.shrink_to_fit();
    ck.protoToTensor.clear();
    ck.protoToTensor.shrink_to_fit();
    ck.helperTensors = std::move(keep);
}

} // namespace ckpt

#include "exportplan.h"

#include "io/error.h"
#include "io/utf8.h"
#include "report/report.h"

#include <algorithm>
#include <map>
#include <regex>
#include <set>
#include <unordered_set>

namespace ckpt {
namespace {

std::string lower(std::string s) {
    for (char& c : s)
        c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    return s;
}

std::string firstSegment(const std::string& name) {
    const auto dot = name.find('.');
    return dot == std::string::npos ? name : name.substr(0, dot);
}

// Top-level keys of training state that is not model weights. Lightning: optimizer_states, lr_schedulers,
// callbacks (EMA lives there), loops; timm: optimizer, state_dict_ema, model_ema; torch.save scripts:
// optimizer(_state_dict), scheduler, scaler; Hugging Face Trainer keeps optimizer.pt / scheduler.pt apart.
bool isTrainingState(const std::string& segment) {
    const std::string s = lower(segment);
    if (s.find("optim") != std::string::npos || s.find("sched") != std::string::npos)
        return true;
    static const std::set<std::string> exact = {
        "scaler", "grad_scaler", "amp", "callbacks", "loops", "opt", "swa", "swa_model", "averaged_model"};
    if (exact.count(s))
        return true;
    // "ema" as a word of the key: ema, model_ema, state_dict_ema, ema_state_dict (never "schema").
    std::size_t start = 0;
    while (start <= s.size()) {
        const auto end = s.find('_', start);
        const std::string word = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
        if (word == "ema")
            return true;
        if (end == std::string::npos)
            break;
        start = end + 1;
    }
    return false;
}

bool isModelContainer(const std::string& segment) {
    static const std::set<std::string> names = {"model", "state_dict", "model_state_dict", "module",
                                                "net",   "network",    "weights",          "model_state"};
    return names.count(segment) > 0;
}

bool isCastable(DType t) {
    return t == DType::Float32 || t == DType::Float64 || t == DType::Float16 || t == DType::BFloat16;
}

bool isSimpleValue(const Value* v) {
    if (!v)
        return false;
    switch (v->kind) {
    case ValueKind::None:
    case ValueKind::Bool:
    case ValueKind::Int:
    case ValueKind::Float:
    case ValueKind::String:
        return true;
    default:
        return false;
    }
}

// dtypes the PyTorch writer can name with a typed storage class that torch.load(weights_only=True) accepts
// in 1.13 and later releases.
bool torchWritable(DType t) {
    switch (t) {
    case DType::UInt8:
    case DType::Int8:
    case DType::Int16:
    case DType::Int32:
    case DType::Int64:
    case DType::Float16:
    case DType::Float32:
    case DType::Float64:
    case DType::Bool:
    case DType::BFloat16:
    case DType::Complex64:
    case DType::Complex128:
        return true;
    default:
        return false;
    }
}

bool safetensorsWritable(DType t) {
    switch (t) {
    case DType::UInt8:
    case DType::Int8:
    case DType::Int16:
    case DType::Int32:
    case DType::Int64:
    case DType::UInt16:
    case DType::UInt32:
    case DType::UInt64:
    case DType::Float16:
    case DType::Float32:
    case DType::Float64:
    case DType::Bool:
    case DType::BFloat16:
    case DType::Float8_e5m2:
    case DType::Float8_e4m3fn:
    case DType::Complex64:
        return true;
    default:
        return false;
    }
}

struct Renamer {
    const ExportOptions& o;
    std::vector<std::regex> regexes;
    explicit Renamer(const ExportOptions& options)
        : o(options) {
        for (const auto& [pattern, repl] : o.regexRenames) {
            try {
                regexes.emplace_back(pattern, std::regex::ECMAScript);
            } catch (const std::regex_error& e) {
                throw Error(ErrorCode::Malformed,
                            "invalid regular expression '" + pattern + "': " + e.what());
            }
        }
    }
    std::string apply(std::string name, const std::string& container) const {
        if (!container.empty() && name.rfind(container, 0) == 0)
            name.erase(0, container.size());
        for (const auto& p : o.stripPrefixes)
            if (!p.empty() && name.rfind(p, 0) == 0)
                name.erase(0, p.size());
        for (std::size_t i = 0; i < regexes.size(); ++i)
            name = std::regex_replace(name, regexes[i], o.regexRenames[i].second);
        return o.addPrefix + name;
    }
};

} // namespace

std::pair<std::string, std::string> parseDeviceMapping(const std::string& arg) {
    const auto eq = arg.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size())
        throw Error(ErrorCode::Malformed,
                    "device mapping '" + arg + "' is not of the form FROM=TO (cuda:0=cpu)");
    return {arg.substr(0, eq), arg.substr(eq + 1)};
}

std::optional<DType> castTargetFromName(const std::string& name) {
    const auto t = dtypeFromName(name.rfind("torch.", 0) == 0 ? name.substr(6) : name);
    if (t && isCastable(*t))
        return t;
    return std::nullopt;
}

bool exportPatternMatch(const std::string& pattern, const std::string& name) {
    if (pattern.rfind("re:", 0) == 0) {
        try {
            return std::regex_search(name, std::regex(pattern.substr(3), std::regex::ECMAScript));
        } catch (const std::regex_error& e) {
            throw Error(ErrorCode::Malformed,
                        "invalid regular expression '" + pattern.substr(3) + "': " + e.what());
        }
    }
    return globMatch(pattern, name);
}

std::string keptValueText(const Value* v) {
    return v && v->kind == ValueKind::String ? v->text : valueRepr(v, 1u << 20);
}

ExportPlan buildExportPlan(const Checkpoint& ck, const ExportOptions& o) {
    ExportPlan plan;
    // Compile the patterns once (a bad one throws here, before any work).
    for (const auto* list : {&o.includes, &o.excludes, &o.keepDtype})
        for (const auto& p : *list)
            exportPatternMatch(p, "");
    const Renamer renamer(o);
    const std::unordered_set<std::string> ticked(o.selected.begin(), o.selected.end());

    auto selectedName = [&](const std::string& name) {
        if (!ticked.empty() && !ticked.count(name))
            return false;
        if (o.weightsOnly && isTrainingState(firstSegment(name)))
            return false;
        if (!o.includes.empty() &&
            std::none_of(o.includes.begin(), o.includes.end(),
                         [&](const std::string& p) { return exportPatternMatch(p, name); }))
            return false;
        return std::none_of(o.excludes.begin(), o.excludes.end(),
                            [&](const std::string& p) { return exportPatternMatch(p, name); });
    };

    std::vector<int> chosen;
    std::size_t droppedTraining = 0;
    for (std::size_t i = 0; i < ck.tensors.size(); ++i) {
        const std::string& name = ck.tensors[i].name;
        if (selectedName(name))
            chosen.push_back(static_cast<int>(i));
        else if (o.weightsOnly && isTrainingState(firstSegment(name)))
            ++droppedTraining;
    }
    if (o.weightsOnly && droppedTraining)
        plan.notes.push_back("weights-only: " + std::to_string(droppedTraining) +
                             " optimizer, scheduler or EMA tensors left out");

    // A weights-only export of a training checkpoint loads straight into the model: drop the container key.
    std::string container;
    if (o.weightsOnly && !chosen.empty()) {
        const std::string seg = firstSegment(ck.tensors[static_cast<std::size_t>(chosen.front())].name);
        const bool all = std::all_of(chosen.begin(), chosen.end(), [&](int i) {
            const std::string& n = ck.tensors[static_cast<std::size_t>(i)].name;
            return n.size() > seg.size() && n.compare(0, seg.size(), seg) == 0 && n[seg.size()] == '.';
        });
        if (all && isModelContainer(seg)) {
            container = seg + ".";
            plan.notes.push_back("weights-only: the model's weights under '" + container +
                                 "' are written at the top level");
        }
    }

    std::map<std::string, std::string> taken; // new name -> source name
    auto claim = [&](const std::string& newName, const std::string& srcName) {
        const auto [it, inserted] = taken.emplace(newName, srcName);
        if (!inserted)
            plan.errors.push_back("'" + it->second + "' and '" + srcName + "' would both be written as '" +
                                  newName + "'");
        if (newName.empty())
            plan.errors.push_back("'" + srcName + "' would be written with an empty name");
        // Names are text in both formats (a pickle's str, a JSON key): bytes that are not UTF-8 would make a
        // file that torch.load and safetensors refuse.
        else if (!isValidUtf8(newName))
            plan.errors.push_back(
                "'" + srcName + "'" +
                (newName == srcName ? "" : " would be written as '" + newName + "', which") +
                " is not valid UTF-8; rename it (--rename) or exclude it");
    };

    std::size_t castCount = 0;
    for (const int i : chosen) {
        const TensorInfo& t = ck.tensors[static_cast<std::size_t>(i)];
        PlannedTensor p;
        p.source = i;
        p.name = renamer.apply(t.name, container);
        p.shape = t.shape;
        p.dtype = t.dtype;
        p.device = t.device.empty() ? "cpu" : t.device;
        for (const auto& [from, to] : o.deviceMap)
            if (from == "*" || from == p.device) {
                p.device = to;
                break;
            }
        if (o.castTo && isCastable(t.dtype) && t.dtype != *o.castTo &&
            std::none_of(o.keepDtype.begin(), o.keepDtype.end(), [&](const std::string& k) {
                return exportPatternMatch(k, t.name) || exportPatternMatch(k, p.name);
            })) {
            p.dtype = *o.castTo;
            p.cast = true;
            ++castCount;
        }
        p.nbytes = dtypeNbytes(p.dtype, t.numel());
        claim(p.name, t.name);
        if (o.format == ExportFormat::Torch && !isValidUtf8(p.device))
            plan.errors.push_back("'" + t.name + "' would be written on device '" + p.device +
                                  "', which is not valid UTF-8; map it (--map-location)");
        if (!t.error.empty())
            plan.errors.push_back("'" + t.name + "' cannot be read: " + t.error);
        else if (t.storage < 0 || t.layout != Layout::Strided)
            plan.errors.push_back("'" + t.name + "' is a " + layoutName(t.layout) +
                                  " tensor without dense data; exclude it to export the rest");
        else if (t.quant.scheme != QuantInfo::Scheme::None)
            plan.errors.push_back("'" + t.name + "' is a quantized tensor, which export does not write");
        else if (o.format == ExportFormat::Torch && !torchWritable(p.dtype))
            plan.errors.push_back("'" + t.name + "' has dtype " + std::string(dtypeName(p.dtype)) +
                                  ", which the PyTorch writer does not write (safetensors may)");
        else if (o.format == ExportFormat::Safetensors && !safetensorsWritable(p.dtype))
            plan.errors.push_back("'" + t.name + "' has dtype " + std::string(dtypeName(p.dtype)) +
                                  ", which safetensors cannot hold");
        plan.tensorBytes += p.nbytes;
        plan.tensors.push_back(std::move(p));
    }
    if (castCount)
        plan.notes.push_back(std::to_string(castCount) + " tensors cast to " +
                             std::string(dtypeName(*o.castTo)));

    // Non-tensor values: the simple ones (numbers, strings, None) when asked; a safetensors source's
    // __metadata__ always stays with a safetensors export.
    std::size_t droppedValues = 0;
    for (std::size_t i = 0; i < ck.values.size(); ++i) {
        const NamedValue& v = ck.values[i];
        const bool metadata = v.name.rfind("__metadata__.", 0) == 0;
        const bool keep =
            metadata && o.format == ExportFormat::Safetensors && !o.weightsOnly
                ? true
                : o.keepValues && !o.weightsOnly && isSimpleValue(v.value) && selectedName(v.name);
        if (!keep) {
            ++droppedValues;
            continue;
        }
        PlannedValue pv;
        pv.source = static_cast<int>(i);
        pv.name = metadata ? v.name : renamer.apply(v.name, container);
        claim(pv.name, v.name);
        if (!isValidUtf8(keptValueText(v.value)))
            plan.errors.push_back("'" + v.name + "' is text that is not valid UTF-8; exclude it");
        plan.values.push_back(std::move(pv));
    }
    if (droppedValues && !ck.values.empty())
        plan.notes.push_back(std::to_string(droppedValues) + " non-tensor values left out");
    if (plan.tensors.empty())
        plan.errors.push_back("no tensor is selected");
    return plan;
}

} // namespace ckpt

#include "value.h"

#include "io/error.h"
#include "io/utf8.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace ckpt {

ValueArena::ValueArena() {
    m_none = make(ValueKind::None);
    m_emptyTuple = make(ValueKind::Tuple);
    m_true = make(ValueKind::Bool);
    m_true->boolean = true;
    m_false = make(ValueKind::Bool);
    m_smallInts.reserve(256);
    for (int i = 0; i < 256; ++i) {
        Value* v = make(ValueKind::Int);
        v->integer = i;
        m_smallInts.push_back(v);
    }
    for (Value* v : {m_none, m_emptyTuple, m_true, m_false})
        v->shared = true;
    for (Value* v : m_smallInts)
        v->shared = true;
}

void ValueArena::recycle(Value* v) {
    if (v->shared)
        return;
    v->text.clear();
    v->items.clear();
    m_free.push_back(v);
}

void ValueArena::copyItems(Value* dst, const std::vector<Value*>& src, std::uint64_t offset) {
    m_copied += src.size();
    if (m_copied > m_copyBudget)
        throw Error(ErrorCode::Limit,
                    "pickle copies more than " + std::to_string(m_copyBudget) +
                        " container items (a small file that would expand to a huge one)",
                    {}, offset);
    for (Value* v : src)
        v->shared = true;
    dst->items = src;
}

Value* ValueArena::make(ValueKind kind) {
    if (!m_free.empty()) {
        Value* v = m_free.back();
        m_free.pop_back();
        std::string text = std::move(v->text); // keep the buffers, reset everything else
        std::vector<Value*> items = std::move(v->items);
        *v = Value{};
        v->text = std::move(text);
        v->items = std::move(items);
        v->kind = kind;
        return v;
    }
    Value& v = m_values.emplace_back();
    v.kind = kind;
    return &v;
}

Value* ValueArena::makeInt(std::int64_t v) {
    if (v >= 0 && v < 256)
        return m_smallInts[static_cast<std::size_t>(v)];
    Value* out = make(ValueKind::Int);
    out->integer = v;
    return out;
}

Value* ValueArena::makeString(std::string_view s) {
    Value* out = make(ValueKind::String);
    out->text = s;
    return out;
}

void Value::setQualified(std::string_view module, std::string_view name) {
    // Names come from GLOBAL lines (capped at 4 KiB) or STACK_GLOBAL strings; keep the split in range.
    module = module.substr(0, 0xFFFF);
    split = static_cast<std::uint16_t>(module.size());
    text.reserve(module.size() + 1 + name.size());
    text.assign(module);
    text += '.';
    text += name;
}

const char* valueKindName(ValueKind kind) {
    switch (kind) {
    case ValueKind::None:
        return "none";
    case ValueKind::Bool:
        return "bool";
    case ValueKind::Int:
        return "int";
    case ValueKind::BigInt:
        return "int";
    case ValueKind::Float:
        return "float";
    case ValueKind::Complex:
        return "complex";
    case ValueKind::String:
        return "str";
    case ValueKind::Bytes:
        return "bytes";
    case ValueKind::List:
        return "list";
    case ValueKind::Tuple:
        return "tuple";
    case ValueKind::Dict:
        return "dict";
    case ValueKind::Set:
        return "set";
    case ValueKind::Global:
        return "global";
    case ValueKind::Object:
        return "object";
    case ValueKind::Tensor:
        return "tensor";
    case ValueKind::Storage:
        return "storage";
    }
    return "?";
}

namespace {

std::string formatDouble(double d) {
    if (std::isnan(d))
        return "nan";
    if (std::isinf(d))
        return d > 0 ? "inf" : "-inf";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", d);
    // Shortest text that reads back to the same double, as Python's repr gives it.
    for (int prec = 1; prec <= 17; ++prec) {
        std::snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (std::strtod(buf, nullptr) == d)
            break;
    }
    std::string s(buf);
    if (s.find_first_of(".eE") == std::string::npos)
        s += ".0";
    return s;
}

void repr(const Value* v, std::string& out, std::size_t maxLen, int depth) {
    if (out.size() > maxLen)
        return;
    if (!v) {
        out += "?";
        return;
    }
    switch (v->kind) {
    case ValueKind::None:
        out += "None";
        return;
    case ValueKind::Bool:
        out += v->boolean ? "True" : "False";
        return;
    case ValueKind::Int:
        out += std::to_string(v->integer);
        return;
    case ValueKind::BigInt:
        out += v->text;
        return;
    case ValueKind::Float:
        out += formatDouble(v->real);
        return;
    case ValueKind::Complex:
        out += "(" + formatDouble(v->real) + (v->imag() < 0 ? "" : "+") + formatDouble(v->imag()) + "j)";
        return;
    case ValueKind::String:
        out += "'";
        out += utf8Prefix(v->text, maxLen);
        out += "'";
        return;
    case ValueKind::Bytes:
        out += "<" + std::to_string(v->text.size()) + " bytes>";
        return;
    case ValueKind::Global:
        out += "<" + v->qualifiedName() + ">";
        return;
    case ValueKind::Object:
        out += "<" + v->qualifiedName() + " object>";
        return;
    case ValueKind::Tensor:
        out += "<tensor>";
        return;
    case ValueKind::Storage:
        out += "<storage>";
        return;
    case ValueKind::List:
    case ValueKind::Tuple:
    case ValueKind::Set:
    case ValueKind::Dict: {
        const char* open = v->kind == ValueKind::List ? "[" : v->kind == ValueKind::Tuple ? "(" : "{";
        const char* close = v->kind == ValueKind::List ? "]" : v->kind == ValueKind::Tuple ? ")" : "}";
        if (depth > 3) {
            out += open;
            out += "...";
            out += close;
            return;
        }
        out += open;
        const bool dict = v->kind == ValueKind::Dict;
        const std::size_t step = dict ? 2 : 1;
        for (std::size_t i = 0; i + step - 1 < v->items.size(); i += step) {
            if (i)
                out += ", ";
            if (out.size() > maxLen) {
                out += "...";
                break;
            }
            repr(v->items[i], out, maxLen, depth + 1);
            if (dict) {
                out += ": ";
                repr(v->items[i + 1], out, maxLen, depth + 1);
            }
        }
        if (v->kind == ValueKind::Tuple && v->items.size() == 1)
            out += ",";
        out += close;
        return;
    }
    }
}

} // namespace

std::string valueRepr(const Value* v, std::size_t maxLen) {
    std::string out;
    repr(v, out, maxLen, 0);
    if (out.size() > maxLen)
        out = std::string(utf8Prefix(out, maxLen)) + "...";
    return out;
}

std::string keyText(const Value* v) {
    if (v && (v->kind == ValueKind::String || v->kind == ValueKind::Bytes))
        return v->text;
    return valueRepr(v, 200);
}

} // namespace ckpt

#include "unpickler.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace ckpt {
namespace {

constexpr std::size_t kMaxLine = 4096; // text arguments: GLOBAL names, protocol-0 numbers

// Little-endian two's complement bytes to decimal text, for integers beyond 64 bits.
std::string bigIntDecimal(std::span<const std::uint8_t> le) {
    const bool negative = !le.empty() && (le.back() & 0x80);
    std::vector<std::uint8_t> mag(le.begin(), le.end());
    if (negative) { // two's complement magnitude
        for (auto& b : mag)
            b = static_cast<std::uint8_t>(~b);
        for (auto& b : mag)
            if (++b != 0)
                break;
    }
    // 32-bit limbs, most significant first, divided by 10^9 in place: nine digits per pass. Quadratic
    // all the same, hence the length cap upstream.
    std::vector<std::uint32_t> limbs((mag.size() + 3) / 4, 0);
    for (std::size_t i = 0; i < mag.size(); ++i)
        limbs[limbs.size() - 1 - i / 4] |= static_cast<std::uint32_t>(mag[i]) << (8 * (i % 4));
    std::size_t first = 0;
    std::string digits;
    while (first < limbs.size()) {
        std::uint64_t rem = 0;
        for (std::size_t i = first; i < limbs.size(); ++i) {
            const std::uint64_t cur = (rem << 32) | limbs[i];
            limbs[i] = static_cast<std::uint32_t>(cur / 1'000'000'000u);
            rem = cur % 1'000'000'000u;
        }
        while (first < limbs.size() && limbs[first] == 0)
            ++first;
        for (int d = 0; d < 9 && (rem != 0 || first < limbs.size()); ++d) { // no leading zeros at the top
            digits.push_back(static_cast<char>('0' + rem % 10));
            rem /= 10;
        }
    }
    if (digits.empty())
        digits = "0";
    if (negative)
        digits.push_back('-');
    std::reverse(digits.begin(), digits.end());
    return digits;
}

bool parseInt64(std::string_view s, std::int64_t* out) {
    if (s.empty())
        return false;
    std::string tmp(s);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(tmp.c_str(), &end, 10);
    if (errno != 0 || end != tmp.c_str() + tmp.size())
        return false;
    *out = v;
    return true;
}

} // namespace

std::pair<std::string, std::string> normalizeGlobal(std::string_view module, std::string_view name) {
    struct Map {
        std::string_view from, to;
    };
    static constexpr std::array<Map, 10> kModules{{{"__builtin__", "builtins"},
                                                   {"copy_reg", "copyreg"},
                                                   {"exceptions", "builtins"},
                                                   {"cPickle", "pickle"},
                                                   {"Queue", "queue"},
                                                   {"UserDict", "collections"},
                                                   {"UserList", "collections"},
                                                   {"commands", "subprocess"},
                                                   {"urllib2", "urllib.request"},
                                                   {"__main__ ", "__main__"}}};
    std::string m(module), n(name);
    for (const auto& e : kModules)
        if (m == e.from)
            m = e.to;
    if (m == "builtins" && n == "xrange")
        n = "range";
    if (m == "builtins" && n == "unicode")
        n = "str";
    return {m, n};
}

Value* PickleHooks::global(ValueArena& arena, std::string_view module, std::string_view name,
                           std::uint64_t offset) {
    Value* g = arena.make(ValueKind::Global);
    g->setQualified(module, name);
    (void)offset;
    return g;
}

Value* PickleHooks::call(ValueArena& arena, Value* callable, Value* args, CallKind how,
                         std::uint64_t offset) {
    Value* obj = arena.make(ValueKind::Object);
    obj->call = how;
    if (callable && callable->kind == ValueKind::Global) {
        obj->text = callable->text;
        obj->split = callable->split;
        obj->dangerous = callable->dangerous;
    } else {
        obj->setQualified("?", callable ? valueKindName(callable->kind) : "?");
    }
    if (args)
        arena.copyItems(obj, args->items, offset);
    return obj;
}

void PickleHooks::build(ValueArena&, Value* object, Value* state, std::uint64_t) {
    if (object->kind == ValueKind::Object && !object->state)
        object->state = state;
    // BUILD on a dict sets attributes (OrderedDict's `_metadata`); they are not items of the dict.
}

Value* PickleHooks::persistentLoad(ValueArena& arena, Value* pid, std::uint64_t offset) {
    Value* obj = arena.make(ValueKind::Object);
    obj->setQualified("pickle", "persistent_id");
    (void)offset;
    obj->items.push_back(pid);
    return obj;
}

Unpickler::Unpickler(ValueArena& arena, PickleHooks& hooks, std::span<const std::uint8_t> data,
                     std::uint64_t baseOffset, std::string context, UnpicklerLimits limits)
    : m_arena(arena)
    , m_hooks(hooks)
    , m_in(data, baseOffset, std::move(context))
    , m_limits(limits) {
    // Copies of container items (tuple(list), a call's arguments) are bounded by the pickle's own size: a
    // real pickle copies each argument tuple about once.
    m_arena.addCopyBudget(4 * static_cast<std::uint64_t>(data.size()) + (1u << 20));
}

void Unpickler::fail(const std::string& what) const {
    const std::string& ctx = m_in.context();
    throw Error(ErrorCode::Malformed, ctx.empty() ? what : ctx + ": " + what, {}, m_opOffset);
}

Value* Unpickler::pop() {
    const std::size_t floor = m_marks.empty() ? 0 : m_marks.back();
    if (m_stack.size() <= floor)
        fail("stack underflow");
    Value* v = m_stack.back();
    m_stack.pop_back();
    return v;
}

Value* Unpickler::top() {
    const std::size_t floor = m_marks.empty() ? 0 : m_marks.back();
    if (m_stack.size() <= floor)
        fail("stack underflow");
    return m_stack.back();
}

void Unpickler::push(Value* v) {
    if (m_stack.size() >= m_limits.maxStack)
        throw Error(ErrorCode::Limit, "pickle stack deeper than " + std::to_string(m_limits.maxStack), {},
                    m_opOffset);
    m_stack.push_back(v);
}

std::vector<Value*> Unpickler::popMark() {
    if (m_marks.empty())
        fail("no MARK on the stack");
    const std::size_t mark = m_marks.back();
    m_marks.pop_back();
    std::vector<Value*> items(m_stack.begin() + static_cast<std::ptrdiff_t>(mark), m_stack.end());
    m_stack.resize(mark);
    return items;
}

void Unpickler::memoPut(std::uint64_t index, Value* v) {
    if (m_memoCount >= m_limits.maxMemo)
        throw Error(ErrorCode::Limit,
                    "pickle memo larger than " + std::to_string(m_limits.maxMemo) + " entries", {},
                    m_opOffset);
    // Pickles number their memo from 0 up, one at a time: only that grows the vector. Any index past its
    // end goes to the map, so a file cannot make the vector long with a few far-off indexes.
    if (index <= m_memo.size()) {
        if (index == m_memo.size())
            m_memo.push_back(nullptr);
        m_memoCount += m_memo[index] == nullptr;
        m_memo[index] = v;
        v->shared = true;
        return;
    }
    m_memoCount += m_sparseMemo.emplace(index, v).second;
    m_sparseMemo[index] = v;
    v->shared = true;
}

Value* Unpickler::memoGet(std::uint64_t index) {
    if (index < m_memo.size() && m_memo[index])
        return m_memo[index];
    const auto it = m_sparseMemo.find(index);
    if (it == m_sparseMemo.end())
        fail("memo index " + std::to_string(index) + " was never stored");
    return it->second;
}

Value* Unpickler::makeBigInt(std::span<const std::uint8_t> bytes) {
    if (bytes.empty())
        return m_arena.makeInt(0);
    if (bytes.size() <= 8) {
        std::uint64_t u = 0;
        for (std::size_t i = 0; i < bytes.size(); ++i)
            u |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);
        if (bytes.size() < 8 && (bytes.back() & 0x80)) // sign-extend
            u |= ~std::uint64_t(0) << (8 * bytes.size());
        return m_arena.makeInt(static_cast<std::int64_t>(u));
    }
    Value* v = m_arena.make(ValueKind::BigInt);
    if (bytes.size() > m_limits.maxBigIntBytes)
        v->text = "<" + std::to_string(bytes.size()) + "-byte integer>";
    else
        v->text = bigIntDecimal(bytes);
    return v;
}

Value* Unpickler::makeGlobal(std::string_view module, std::string_view name) {
    auto [m, n] = normalizeGlobal(module, name);
    return m_hooks.global(m_arena, m, n, m_opOffset);
}

Value* Unpickler::load() {
    m_valuesAtStart = m_arena.count();
    auto str = [&](ValueKind kind, std::string_view s) {
        Value* v = m_arena.make(kind);
        v->text = s;
        return v;
    };
    auto asTuple = [&](std::vector<Value*> items) {
        Value* t = m_arena.make(ValueKind::Tuple);
        t->items = std::move(items);
        return t;
    };
    for (;;) {
        if (m_arena.count() - m_valuesAtStart > m_limits.maxValues)
            throw Error(ErrorCode::Limit,
                        "pickle builds more than " + std::to_string(m_limits.maxValues) + " objects", {},
                        m_opOffset);
        m_opOffset = m_in.absolutePosition();
        const std::uint8_t op = m_in.u8();
        switch (op) {
        case 0x80: { // PROTO
            const unsigned proto = m_in.u8();
            if (proto > 5)
                fail("unsupported pickle protocol " + std::to_string(proto));
            break;
        }
        case 0x95: // FRAME: a hint for buffering, the opcodes follow inline
            m_in.u64le();
            break;
        case '.': // STOP
            if (!m_marks.empty())
                fail("STOP inside an unclosed MARK");
            if (m_stack.empty())
                fail("STOP with an empty stack");
            return m_stack.back();
        case '(': // MARK
            if (m_marks.size() >= m_limits.maxMarks)
                throw Error(ErrorCode::Limit,
                            "more than " + std::to_string(m_limits.maxMarks) + " nested MARKs", {},
                            m_opOffset);
            m_marks.push_back(m_stack.size());
            break;
        case '0':
            pop();
            break; // POP
        case '1':
            popMark();
            break; // POP_MARK
        case '2':  // DUP
            top()->shared = true;
            push(top());
            break;

        case 'N':
            push(m_arena.none());
            break;
        case 0x88:
            push(m_arena.boolean(true));
            break;
        case 0x89:
            push(m_arena.boolean(false));
            break;
        case 'J':
            push(m_arena.makeInt(m_in.i32le()));
            break;
        case 'K':
            push(m_arena.makeInt(m_in.u8()));
            break;
        case 'M':
            push(m_arena.makeInt(m_in.u16le()));
            break;
        case 0x8a: { // LONG1
            const std::size_t n = m_in.u8();
            push(makeBigInt(m_in.bytes(n)));
            break;
        }
        case 0x8b: { // LONG4
            const std::int32_t n = m_in.i32le();
            if (n < 0)
                fail("LONG4 with negative length");
            push(makeBigInt(m_in.bytes(static_cast<std::size_t>(n))));
            break;
        }
        case 'I': { // INT (protocol 0): decimal, or 00/01 for False/True
            const std::string_view s = m_in.line(kMaxLine);
            if (s == "00" || s == "01") {
                push(m_arena.boolean(s == "01"));
                break;
            }
            std::int64_t v = 0;
            if (!parseInt64(s, &v))
                fail("INT argument is not a decimal number");
            push(m_arena.makeInt(v));
            break;
        }
        case 'L': { // LONG (protocol 0): decimal with optional trailing L
            std::string_view s = m_in.line(kMaxLine);
            if (!s.empty() && s.back() == 'L')
                s.remove_suffix(1);
            std::int64_t v = 0;
            if (parseInt64(s, &v)) {
                push(m_arena.makeInt(v));
            } else {
                if (s.empty() || s.find_first_not_of("-0123456789") != std::string_view::npos)
                    fail("LONG argument is not a decimal number");
                push(str(ValueKind::BigInt, s));
            }
            break;
        }
        case 'G': { // BINFLOAT
            Value* v = m_arena.make(ValueKind::Float);
            v->real = m_in.f64be();
            push(v);
            break;
        }
        case 'F': { // FLOAT (protocol 0)
            const std::string s(m_in.line(kMaxLine));
            char* end = nullptr;
            const double d = std::strtod(s.c_str(), &end);
            if (s.empty() || end != s.c_str() + s.size())
                fail("FLOAT argument is not a number");
            Value* v = m_arena.make(ValueKind::Float);
            v->real = d;
            push(v);
            break;
        }

        case 'X':
            push(str(ValueKind::String, m_in.stringView(m_in.u32le())));
            break; // BINUNICODE
        case 0x8c:
            push(str(ValueKind::String, m_in.stringView(m_in.u8())));
            break;   // SHORT_BINUNICODE
        case 0x8d: { // BINUNICODE8
            const std::uint64_t n = m_in.u64le();
            if (n > m_in.remaining())
                m_in.fail(ErrorCode::Truncated,
                          "string of " + std::to_string(n) + " bytes runs past the end");
            push(str(ValueKind::String, m_in.stringView(static_cast<std::size_t>(n))));
            break;
        }
        case 'U':
            push(str(ValueKind::String, m_in.stringView(m_in.u8())));
            break;  // SHORT_BINSTRING (py2 str)
        case 'T': { // BINSTRING
            const std::int32_t n = m_in.i32le();
            if (n < 0)
                fail("BINSTRING with negative length");
            push(str(ValueKind::String, m_in.stringView(static_cast<std::size_t>(n))));
            break;
        }
        case 'S':   // STRING (protocol 0): a quoted Python literal; kept without its quotes
        case 'V': { // UNICODE (protocol 0): raw-unicode-escape text
            std::string_view s = m_in.line(1u << 20);
            if (op == 'S') {
                if (s.size() < 2 || (s.front() != '\'' && s.front() != '"') || s.back() != s.front())
                    fail("STRING argument is not quoted");
                s = s.substr(1, s.size() - 2);
            }
            push(str(ValueKind::String, s));
            break;
        }
        case 'C':
            push(str(ValueKind::Bytes, m_in.stringView(m_in.u8())));
            break; // SHORT_BINBYTES
        case 'B':
            push(str(ValueKind::Bytes, m_in.stringView(m_in.u32le())));
            break;   // BINBYTES
        case 0x8e:   // BINBYTES8
        case 0x96: { // BYTEARRAY8
            const std::uint64_t n = m_in.u64le();
            if (n > m_in.remaining())
                m_in.fail(ErrorCode::Truncated, "bytes of " + std::to_string(n) + " bytes run past the end");
            push(str(ValueKind::Bytes, m_in.stringView(static_cast<std::size_t>(n))));
            break;
        }

        case ')':
            push(m_arena.emptyTuple());
            break;
        case 0x85: {
            Value* a = pop();
            push(asTuple({a}));
            break;
        }
        case 0x86: {
            Value* b = pop();
            Value* a = pop();
            push(asTuple({a, b}));
            break;
        }
        case 0x87: {
            Value* c = pop();
            Value* b = pop();
            Value* a = pop();
            push(asTuple({a, b, c}));
            break;
        }
        case 't':
            push(asTuple(popMark()));
            break;
        case ']':
            push(m_arena.make(ValueKind::List));
            break;
        case 'l': { // LIST
            Value* l = m_arena.make(ValueKind::List);
            l->items = popMark();
            push(l);
            break;
        }
        case '}':
            push(m_arena.make(ValueKind::Dict));
            break;
        case 'd': { // DICT
            auto items = popMark();
            if (items.size() % 2)
                fail("DICT with an odd number of items");
            Value* d = m_arena.make(ValueKind::Dict);
            d->items = std::move(items);
            push(d);
            break;
        }
        case 0x8f:
            push(m_arena.make(ValueKind::Set));
            break;   // EMPTY_SET
        case 0x91: { // FROZENSET
            Value* s = m_arena.make(ValueKind::Set);
            s->isFrozen = true;
            s->items = popMark();
            push(s);
            break;
        }
        case 'a': { // APPEND
            Value* v = pop();
            Value* l = top();
            if (l->kind != ValueKind::List)
                fail(std::string("APPEND to a ") + valueKindName(l->kind) + ", not a list");
            l->items.push_back(v);
            break;
        }
        case 'e': { // APPENDS
            auto items = popMark();
            Value* l = top();
            if (l->kind != ValueKind::List)
                fail(std::string("APPENDS to a ") + valueKindName(l->kind) + ", not a list");
            l->items.insert(l->items.end(), items.begin(), items.end());
            break;
        }
        case 0x90: { // ADDITEMS
            auto items = popMark();
            Value* s = top();
            if (s->kind != ValueKind::Set)
                fail(std::string("ADDITEMS to a ") + valueKindName(s->kind) + ", not a set");
            s->items.insert(s->items.end(), items.begin(), items.end());
            break;
        }
        case 's': { // SETITEM
            Value* v = pop();
            Value* k = pop();
            Value* d = top();
            if (d->kind != ValueKind::Dict)
                fail(std::string("SETITEM on a ") + valueKindName(d->kind) + ", not a dict");
            d->items.push_back(k);
            d->items.push_back(v);
            break;
        }
        case 'u': { // SETITEMS
            auto items = popMark();
            if (items.size() % 2)
                fail("SETITEMS with an odd number of items");
            Value* d = top();
            if (d->kind != ValueKind::Dict)
                fail(std::string("SETITEMS on a ") + valueKindName(d->kind) + ", not a dict");
            d->items.insert(d->items.end(), items.begin(), items.end());
            break;
        }

        case 'p': { // PUT (protocol 0)
            std::int64_t idx = 0;
            if (!parseInt64(m_in.line(kMaxLine), &idx) || idx < 0)
                fail("PUT index is not a number");
            memoPut(static_cast<std::uint64_t>(idx), top());
            break;
        }
        case 'q':
            memoPut(m_in.u8(), top());
            break;
        case 'r':
            memoPut(m_in.u32le(), top());
            break;
        case 0x94:
            memoPut(m_memoCount, top());
            break;  // MEMOIZE
        case 'g': { // GET (protocol 0)
            std::int64_t idx = 0;
            if (!parseInt64(m_in.line(kMaxLine), &idx) || idx < 0)
                fail("GET index is not a number");
            push(memoGet(static_cast<std::uint64_t>(idx)));
            break;
        }
        case 'h':
            push(memoGet(m_in.u8()));
            break;
        case 'j':
            push(memoGet(m_in.u32le()));
            break;

        case 'c': { // GLOBAL
            const std::string module(m_in.line(kMaxLine));
            const std::string name(m_in.line(kMaxLine));
            push(makeGlobal(module, name));
            break;
        }
        case 0x93: { // STACK_GLOBAL
            Value* name = pop();
            Value* module = pop();
            if (module->kind != ValueKind::String || name->kind != ValueKind::String)
                fail("STACK_GLOBAL needs two strings");
            push(makeGlobal(module->text, name->text));
            break;
        }
        case 'R': { // REDUCE
            Value* args = pop();
            Value* callable = pop();
            if (args->kind != ValueKind::Tuple)
                fail(std::string("REDUCE arguments are a ") + valueKindName(args->kind) + ", not a tuple");
            push(m_hooks.call(m_arena, callable, args, CallKind::Reduce, m_opOffset));
            m_arena.recycle(args); // hooks copy what they keep of the argument tuple, never the tuple
            break;
        }
        case 0x81: { // NEWOBJ
            Value* args = pop();
            Value* cls = pop();
            if (args->kind != ValueKind::Tuple)
                fail("NEWOBJ arguments are not a tuple");
            push(m_hooks.call(m_arena, cls, args, CallKind::NewObj, m_opOffset));
            m_arena.recycle(args);
            break;
        }
        case 0x92: { // NEWOBJ_EX
            Value* kwargs = pop();
            Value* args = pop();
            Value* cls = pop();
            if (args->kind != ValueKind::Tuple || kwargs->kind != ValueKind::Dict)
                fail("NEWOBJ_EX needs a tuple and a dict");
            Value* all = m_arena.make(ValueKind::Tuple);
            m_arena.copyItems(all, args->items, m_opOffset);
            if (!kwargs->items.empty())
                all->items.push_back(kwargs);
            push(m_hooks.call(m_arena, cls, all, CallKind::NewObj, m_opOffset));
            break;
        }
        case 'i': { // INST: class named inline, arguments since MARK
            const std::string module(m_in.line(kMaxLine));
            const std::string name(m_in.line(kMaxLine));
            Value* cls = makeGlobal(module, name);
            Value* args = asTuple(popMark());
            push(m_hooks.call(m_arena, cls, args, CallKind::Inst, m_opOffset));
            break;
        }
        case 'o': { // OBJ: class and arguments since MARK
            auto items = popMark();
            if (items.empty())
                fail("OBJ without a class");
            Value* cls = items.front();
            Value* args = asTuple(std::vector<Value*>(items.begin() + 1, items.end()));
            push(m_hooks.call(m_arena, cls, args, CallKind::Obj, m_opOffset));
            break;
        }
        case 'b': { // BUILD
            Value* state = pop();
            Value* obj = top();
            m_hooks.build(m_arena, obj, state, m_opOffset);
            break;
        }
        case 'Q': { // BINPERSID
            Value* pid = pop();
            push(m_hooks.persistentLoad(m_arena, pid, m_opOffset));
            if (!m_hooks.keepsPersistentId())
                m_arena.recycle(pid);
            break;
        }
        case 'P': { // PERSID (protocol 0)
            Value* pid = str(ValueKind::String, m_in.line(kMaxLine));
            push(m_hooks.persistentLoad(m_arena, pid, m_opOffset));
            break;
        }
        case 0x82:
        case 0x83:
        case 0x84:
            fail("extension-registry opcodes (EXT1/EXT2/EXT4) are not supported");
        case 0x97:
        case 0x98:
            fail("out-of-band buffer opcodes (NEXT_BUFFER/READONLY_BUFFER) are not supported");
        default: {
            char hex[8];
            std::snprintf(hex, sizeof hex, "0x%02x", op);
            fail(std::string("unknown pickle opcode ") + hex);
        }
        }
    }
}

} // namespace ckpt

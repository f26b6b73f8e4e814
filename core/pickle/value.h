#pragma once

#include <bit>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt {

enum class ValueKind : std::uint8_t {
    None,
    Bool,
    Int,
    BigInt, // integer beyond 64 bits: `text` holds its decimal digits
    Float,
    Complex,
    String,
    Bytes,
    List,
    Tuple,
    Dict, // dict and OrderedDict; `items` holds key, value, key, value, ...
    Set,
    Global, // a reference to a module attribute, never resolved to code: `module`, `name`
    Object, // the result of calling or instantiating a global: `module`, `name`, `items` = arguments, `state`
    Tensor, // `index` into the reader's tensor prototypes
    Storage, // `index` into the checkpoint's storages
};

// How an Object came to be, for messages and security findings.
enum class CallKind : std::uint8_t { None, Reduce, NewObj, Inst, Obj };

// A node of the data tree a pickle describes. Values are owned by a ValueArena and point at each other
// with raw pointers: a pickle can build shared and even cyclic graphs through its memo, which plain
// ownership cannot express; the arena frees everything at once without recursion.
struct Value {
    ValueKind kind = ValueKind::None;
    CallKind call = CallKind::None;
    bool boolean : 1 = false;
    bool isOrderedDict : 1 = false;
    bool isFrozen : 1 = false;  // frozenset
    bool dangerous : 1 = false; // a Global / Object whose callable is a known code-execution gadget
    bool plainData : 1 = false; // a Global on the allow-list of data constructors
    bool shared : 1 = false;    // memoized, duplicated or interned: may be referenced from several places
    std::uint16_t split = 0;    // Global / Object: length of the module part of `text`
    std::int64_t integer = 0;   // Int; Tensor / Storage index
    double real = 0;            // Float; Complex real part (imaginary part in imag())
    std::string text;           // String, Bytes, BigInt digits; Global / Object: "module.name"
    std::vector<Value*> items;  // List, Tuple, Set, Dict pairs, Object arguments
    Value* state = nullptr;     // Object: BUILD state

    bool isContainer() const {
        return kind == ValueKind::List || kind == ValueKind::Tuple || kind == ValueKind::Dict ||
               kind == ValueKind::Set;
    }
    // Global / Object naming. A Value is 88 bytes: checkpoints hold millions of them.
    void setQualified(std::string_view module, std::string_view name);
    std::string_view module() const { return std::string_view(text).substr(0, split); }
    std::string_view name() const {
        return split < text.size() ? std::string_view(text).substr(split + 1u) : std::string_view();
    }
    const std::string& qualifiedName() const { return text; }
    double imag() const { return std::bit_cast<double>(integer); }
    void setImag(double v) { integer = std::bit_cast<std::int64_t>(v); }
};

class ValueArena {
public:
    ValueArena();
    Value* make(ValueKind kind);
    Value* makeInt(std::int64_t v);
    Value* makeString(std::string_view s);
    Value* none() const { return m_none; }
    Value* emptyTuple() const { return m_emptyTuple; }
    // Hands back a value nothing refers to any more (a call's argument tuple), for make() to reuse.
    void recycle(Value* v);
    // Makes `dst->items` a copy of `src` (tuple(list), a call's arguments kept in its object). The items are
    // then referenced twice, so they are marked shared and never recycled. Copies are what lets a small
    // pickle ask for huge memory (one list of a million items copied by each of a million REDUCEs), so
    // they draw on a budget that each pickle adds to in proportion to its size (addCopyBudget); past it an
    // Error (Limit) at `offset`.
    void copyItems(Value* dst, const std::vector<Value*>& src, std::uint64_t offset);
    void addCopyBudget(std::uint64_t items) { m_copyBudget += items; }
    Value* boolean(bool b) const { return b ? m_true : m_false; }
    std::size_t count() const { return m_values.size(); }

private:
    std::deque<Value> m_values;
    std::vector<Value*> m_free;
    Value* m_none;
    Value* m_emptyTuple;
    Value* m_true;
    Value* m_false;
    std::vector<Value*> m_smallInts; // shared instances of 0..255, the bulk of any checkpoint's integers
    std::uint64_t m_copyBudget = 0;
    std::uint64_t m_copied = 0;
};

// Short, Python-like text for a value (`5`, `0.001`, `'adam'`, `[0, 1, 2]`, `<argparse.Namespace>`),
// cut at `maxLen` characters; walks at most a few levels deep.
std::string valueRepr(const Value* v, std::size_t maxLen = 80);
// Key text for a dict key in a tensor name: strings as they are, integers in decimal.
std::string keyText(const Value* v);
const char* valueKindName(ValueKind kind);

} // namespace ckpt

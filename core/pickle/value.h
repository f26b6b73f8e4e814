#pragma once

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
    BigInt,   // integer beyond 64 bits: `text` holds its decimal digits
    Float,
    Complex,
    String,
    Bytes,
    List,
    Tuple,
    Dict,     // dict and OrderedDict; `items` holds key, value, key, value, ...
    Set,
    Global,   // a reference to a module attribute, never resolved to code: `module`, `name`
    Object,   // the result of calling or instantiating a global: `module`, `name`, `items` = arguments, `state`
    Tensor,   // `index` into the reader's tensor prototypes
    Storage,  // `index` into the checkpoint's storages
};

// How an Object came to be, for messages and security findings.
enum class CallKind : std::uint8_t { None, Reduce, NewObj, Inst, Obj };

// A node of the data tree a pickle describes. Values are owned by a ValueArena and point at each other
// with raw pointers: a pickle can build shared and even cyclic graphs through its memo, which plain
// ownership cannot express; the arena frees everything at once without recursion.
struct Value {
    ValueKind kind = ValueKind::None;
    CallKind call = CallKind::None;
    bool boolean = false;
    bool isOrderedDict = false;
    bool isFrozen = false;       // frozenset
    bool dangerous = false;      // a Global / Object whose callable is a known code-execution gadget
    std::int64_t integer = 0;    // Int; Tensor / Storage index
    double real = 0, imag = 0;   // Float, Complex
    std::string text;            // String, Bytes, BigInt digits, Global / Object module
    std::string name;            // Global / Object attribute name
    std::vector<Value*> items;   // List, Tuple, Set, Dict pairs, Object arguments
    Value* state = nullptr;      // Object: BUILD state
    std::uint64_t offset = 0;    // byte offset of the opcode that produced it

    bool isContainer() const
    {
        return kind == ValueKind::List || kind == ValueKind::Tuple || kind == ValueKind::Dict ||
               kind == ValueKind::Set;
    }
    std::string qualifiedName() const { return text + "." + name; }
};

class ValueArena {
public:
    ValueArena();
    Value* make(ValueKind kind);
    Value* makeInt(std::int64_t v);
    Value* makeString(std::string_view s);
    Value* none() const { return m_none; }
    Value* boolean(bool b) const { return b ? m_true : m_false; }
    std::size_t count() const { return m_values.size(); }

private:
    std::deque<Value> m_values;
    Value* m_none;
    Value* m_true;
    Value* m_false;
    std::vector<Value*> m_smallInts; // shared instances of 0..255, the bulk of any checkpoint's integers
};

// Short, Python-like text for a value (`5`, `0.001`, `'adam'`, `[0, 1, 2]`, `<argparse.Namespace>`),
// cut at `maxLen` characters; walks at most a few levels deep.
std::string valueRepr(const Value* v, std::size_t maxLen = 80);
// Key text for a dict key in a tensor name: strings as they are, integers in decimal.
std::string keyText(const Value* v);
const char* valueKindName(ValueKind kind);

} // namespace ckpt

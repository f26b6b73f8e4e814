#pragma once

// A pickle virtual machine that only builds data.
//
// Grammar: a pickle is a sequence of opcodes ending with STOP ('.'); each opcode is one byte followed by
// its fixed or length-prefixed argument. Protocols 0 to 5 are read: every opcode of Python's pickle
// module except the extension registry (EXT1/2/4) and out-of-band buffers (NEXT_BUFFER, READONLY_BUFFER),
// which are refused.
//
// Nothing from the pickle is ever imported, called or evaluated. GLOBAL, STACK_GLOBAL and INST produce a
// Global value that records a module and a name; REDUCE, NEWOBJ, NEWOBJ_EX, INST and OBJ hand the callable
// and its arguments to PickleHooks::call, which either builds a typed value for a known data constructor
// (OrderedDict, a tensor rebuild function) or records an opaque Object; BUILD hands the state to
// PickleHooks::build; BINPERSID and PERSID hand the persistent id to PickleHooks::persistentLoad.
//
// Limits: stack depth, memo size, mark depth and value count are capped (UnpicklerLimits); SETITEM(S)
// only on dicts, APPEND(S) only on lists, ADDITEMS only on sets; every length is checked against the bytes
// left; a truncated stream, stack underflow or a bad memo index is a clean Error with the byte offset.

#include "value.h"

#include "io/bytereader.h"

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace ckpt {

struct UnpicklerLimits {
    std::size_t maxStack = 1u << 24;
    std::size_t maxMarks = 1u << 16;
    std::size_t maxMemo = 1u << 26;
    std::size_t maxValues = 1u << 25; // 88 bytes each: about 3 GB
    std::size_t maxBigIntBytes = 256; // longer integers are kept as a size, not converted to digits
};

class PickleHooks {
public:
    virtual ~PickleHooks() = default;
    // A GLOBAL / STACK_GLOBAL / INST reference was read. May return a replacement (a dtype constant).
    virtual Value* global(ValueArena& arena, std::string_view module, std::string_view name,
                          std::uint64_t offset);
    virtual Value* call(ValueArena& arena, Value* callable, Value* args, CallKind how, std::uint64_t offset);
    virtual void build(ValueArena& arena, Value* object, Value* state, std::uint64_t offset);
    virtual Value* persistentLoad(ValueArena& arena, Value* pid, std::uint64_t offset);
    // Whether persistentLoad's result may refer to the id tuple itself (else the tuple is recycled).
    virtual bool keepsPersistentId() const { return true; }
};

class Unpickler {
public:
    Unpickler(ValueArena& arena, PickleHooks& hooks, std::span<const std::uint8_t> data,
              std::uint64_t baseOffset, std::string context, UnpicklerLimits limits = {});

    // Runs to STOP and returns the top of the stack.
    Value* load();
    // Bytes consumed so far: a legacy file holds several pickles back to back.
    std::size_t position() const { return m_in.position(); }
    // Byte offset (in the file) of the opcode being executed.
    std::uint64_t opcodeOffset() const { return m_opOffset; }

private:
    Value* pop();
    Value* top();
    void push(Value* v);
    std::vector<Value*> popMark();
    void memoPut(std::uint64_t index, Value* v);
    Value* memoGet(std::uint64_t index);
    Value* makeBigInt(std::span<const std::uint8_t> bytes);
    Value* makeGlobal(std::string_view module, std::string_view name);
    [[noreturn]] void fail(const std::string& what) const;

    ValueArena& m_arena;
    PickleHooks& m_hooks;
    ByteReader m_in;
    UnpicklerLimits m_limits;
    std::vector<Value*> m_stack;
    std::vector<std::size_t> m_marks;
    // Pickles number memo slots densely from 0, so a vector serves; other indices go to a map so that a
    // hostile index cannot make the vector huge.
    std::vector<Value*> m_memo;
    std::unordered_map<std::uint64_t, Value*> m_sparseMemo;
    std::size_t m_memoCount = 0;
    std::uint64_t m_opOffset = 0;
    std::size_t m_valuesAtStart = 0;
};

// Python 2 module and name spellings mapped to Python 3 (pickle's IMPORT_MAPPING / NAME_MAPPING subset).
std::pair<std::string, std::string> normalizeGlobal(std::string_view module, std::string_view name);

} // namespace ckpt

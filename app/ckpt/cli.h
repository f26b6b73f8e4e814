// Shared pieces of the ckpt command line: a registry so that each command can live in a file of its own
// (cmd_*.cpp registers itself with a static Registrar), and the error reporting every command uses.
#pragma once

#include "model/checkpoint.h"

#include <string>
#include <vector>

namespace ckpt::cli {

struct Command {
    const char* name;  // "diff"
    const char* usage; // the lines --help shows for it, each starting with "  ckpt NAME", newline-terminated
    // Runs the command on the arguments after its name; returns the exit status. ckpt::Error and other
    // exceptions escaping it are reported by main() and give exit status 2.
    int (*run)(const std::vector<std::string>& args);
};

void registerCommand(const Command& command);
const std::vector<Command>& registeredCommands();

struct Registrar {
    explicit Registrar(const Command& command) { registerCommand(command); }
};

// Prints "ckpt: WHAT (ckpt --help shows the usage)" and exits with status 2.
[[noreturn]] void usageError(const std::string& what);

// Every error finding of the checkpoint on stderr as "ckpt: FILE: at byte N: OBJECT: message"; true if any.
bool reportErrors(const Checkpoint& checkpoint, const std::string& file);

} // namespace ckpt::cli

// libFuzzer target: the pickle machine with PyTorch's hooks and the tree walk, on raw pickle bytes.

#include "formats/torchpickle.h"
#include "pickle/unpickler.h"

#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    ckpt::Checkpoint ck;
    ck.arena = std::make_shared<ckpt::ValueArena>();
    ckpt::TorchPickleHooks hooks(ck);
    try {
        ckpt::Unpickler u(*ck.arena, hooks, {data, size}, 0, "fuzz");
        ck.root = u.load();
        ckpt::walkTree(ck, hooks.globalFindings());
        ckpt::checkTensorExtents(ck);
        (void)ckpt::valueRepr(ck.root, 300);
    } catch (const ckpt::Error&) {
    }
    return 0;
}

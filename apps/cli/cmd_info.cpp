// healthgpt info: what this build and this machine offer.
#include <cstdio>

#include "command.h"
#include "core/cpu_features.h"
#include "core/ops.h"

HG_COMMAND(info, "Print build, CPU and kernel-dispatch information") {
    return [] {
        const auto& f = hg::cpu_features();
        std::printf("healthgpt 0.1.0\n");
        std::printf("cpu:            %s (%s)\n", f.brand.c_str(), f.vendor.c_str());
        std::printf("cpu flags:      %s\n", hg::cpu_flags_string().c_str());
        std::printf("physical cores: %d\n", hg::physical_cores());
        std::printf("isa supported:  %s\n", hg::isa_name(hg::isa_supported()));
        std::printf("isa active:     %s (HEALTHGPT_ISA caps it)\n", hg::isa_name(hg::isa_active()));
        std::printf("kernels:        %s\n", hg::kernels().name);
        std::printf("kernel choice:  %s\n", hg::kernels().choice);
        // Every level this build has, and whether this CPU runs it (HEALTHGPT_ISA=<name> selects one).
        for (hg::Isa isa : {hg::Isa::Scalar, hg::Isa::Avx2, hg::Isa::Avx512})
            std::printf("level %-8s  %s\n", hg::isa_name(isa),
                        hg::kernels_for(isa) ? "built, runs on this CPU" : "built, NOT supported by this CPU");
        std::printf("level amx       not built (no AMX kernels yet%s)\n",
                    f.amx_tile ? "; this CPU has AMX tiles" : "; this CPU has no AMX either");
        return 0;
    };
}

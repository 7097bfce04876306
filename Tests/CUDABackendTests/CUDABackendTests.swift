import Foundation
import LoomCore
import Testing
@testable import CUDABackend

/// Tests that run anywhere: without a GPU the backend must fail with a named error, and where NVRTC
/// is installed every kernel must compile. The op-against-CPU checks need a GPU: `loom gpu-check`
/// runs them on the device (`scripts/gpu/check.sh`).
@Suite struct CUDABackendTests {
    @Test func backendWithoutGPUThrowsANamedError() throws {
        do {
            let backend = try CUDABackend()
            // A GPU is present: the backend must at least report a device.
            #expect(!backend.deviceName.isEmpty)
        } catch let error as CUDAError {
            #expect(!error.description.isEmpty)
        }
    }

    /// A widened weight's GEMM (`linear(…, tiledAs:)`) takes the first choice of its base rows' shape,
    /// everything else equal but an output stride that was the widened rows' count.
    @Test func aWidenedWeightTakesItsBaseShapesTiling() {
        func key(m: Int, ldOutput: Int, tiling: Int) -> CuBLASLt.PlanKey {
            CuBLASLt.PlanKey(m: m, n: 32, k: 4096, ldWeight: 4096, ldInput: 4096, ldOutput: ldOutput, batch: 1, strideWeight: 0,
                             strideInput: 0, strideOutput: 0, outType: CuBLASLt.r16BF, alignment: 256, tilingRows: tiling)
        }
        #expect(CuBLASLt.baseShape(of: key(m: 28_928, ldOutput: 28_928, tiling: 28_672)) == key(m: 28_672, ldOutput: 28_672, tiling: 0))
        #expect(CuBLASLt.baseShape(of: key(m: 6_528, ldOutput: 8_192, tiling: 6_144)) == key(m: 6_144, ldOutput: 8_192, tiling: 0))
        #expect(CuBLASLt.baseShape(of: key(m: 28_672, ldOutput: 28_672, tiling: 0)) == nil)
        #expect(CuBLASLt.baseShape(of: key(m: 4_096, ldOutput: 4_096, tiling: 4_096)) == nil)
    }

    /// CI sets LOOM_LIBNVRTC (NVRTC from PyPI, `.ci/run`), so there this test must compile.
    @Test func everyKernelCompilesWithNVRTC() throws {
        let required = ProcessInfo.processInfo.environment["LOOM_LIBNVRTC"] != nil
        guard let nvrtc = try? NVRTC() else {
            #expect(!required, "LOOM_LIBNVRTC is set but NVRTC did not load")
            return  // no toolkit on this machine
        }
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("loom-kernel-test-\(getpid())").path
        setenv("LOOM_KERNEL_CACHE", cache, 1)
        defer { unsetenv("LOOM_KERNEL_CACHE"); try? FileManager.default.removeItem(atPath: cache) }
        let compiled = try KernelLibrary.compileAll(nvrtc: nvrtc, major: 9, minor: 0)
        #expect(compiled.count == KernelLibrary.modules.count)
        for (module, cubin, _) in compiled {
            #expect(!cubin.isEmpty, "\(module.name)")
            // Every function the backend will look up is a symbol of the module's cubin (an ELF
            // whose string table holds each name, NUL-terminated).
            for function in module.functions {
                let symbol = Array(function.utf8) + [0]
                let found = cubin.indices.dropLast(symbol.count - 1).contains { i in
                    cubin[i] == symbol[0] && (i == 0 || cubin[i - 1] == 0) && Array(cubin[i ..< i + symbol.count]) == symbol
                }
                #expect(found, "\(module.name): no kernel \(function)")
            }
        }
        // The second time every module comes from the disk cache.
        let again = try KernelLibrary.compileAll(nvrtc: nvrtc, major: 9, minor: 0)
        #expect(again.allSatisfy { $0.2 == "cache" })
    }

    /// `LOOM_CARVEOUT`: function=percent pairs (`*` for the rest); anything else is a named error,
    /// not a setting silently dropped from an A/B run.
    @Test func carveoutSettingParsesPairsAndRejectsTheRest() throws {
        #expect(try KernelLibrary.carveouts("") == [:])
        #expect(try KernelLibrary.carveouts("loom_rope_write_kv=100, *=-1") == ["loom_rope_write_kv": 100, "*": -1])
        for bad in ["loom_rope_write_kv", "loom_rope_write_kv=101", "=50", "loom_norm=half", "a=1,b"] {
            #expect(throws: CUDAError.self, "\(bad)") { try KernelLibrary.carveouts(bad) }
        }
    }

    /// `LOOM_KERNEL_SOURCES`: a folder's files named like a module (or `common.cuh`) replace the
    /// embedded sources; other files there are ignored.
    @Test func kernelSourceOverridesTakeOnlyModuleFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("loom-sources-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, text) in [("lora_shrink.cu", "// variant"), ("common.cuh", "// header"), ("notes.cu", "x"), ("README", "y")] {
            try Data(text.utf8).write(to: dir.appendingPathComponent(name))
        }
        let files = KernelLibrary.sourceOverrides(in: dir.path)
        #expect(Set(files.keys) == ["lora_shrink.cu", "common.cuh"])
        #expect(files["lora_shrink.cu"] == Array("// variant".utf8))
        #expect(KernelLibrary.sourceOverrides(in: nil).isEmpty)
        #expect(KernelLibrary.sourceOverrides(in: dir.appendingPathComponent("missing").path).isEmpty)
    }

    /// Kernels launch with programmatic dependent launch, so each may start before the kernel it
    /// depends on has finished: every entry point must execute `griddepcontrol.wait` (`grid_wait`
    /// in common.cuh) before it touches activations. Checked on each entry's PTX for sm_90: before
    /// the first wait, no store, atomic, shared-memory or global access, except the non-coherent
    /// loads of `loom_gemv` (W), the LoRA shrinks (the plan and A) and the fused LoRA consumers
    /// (RoPE, `loom_norm_lora`, `loom_silu_mul_lora`: the step's metadata, slot ranks and B), constant
    /// during a step; `loom_silu_mul_lora`'s scan of its slot's rows into its own shared memory; and
    /// the decode attention on tensor cores, which reads the step's metadata and older tokens' cache
    /// rows into shared memory (global and shared loads, shared stores, cp.async; no global store).
    @Test func everyKernelWaitsForThePreviousGrid() throws {
        guard let nvrtc = try? NVRTC() else {
            #expect(ProcessInfo.processInfo.environment["LOOM_LIBNVRTC"] == nil, "LOOM_LIBNVRTC is set but NVRTC did not load")
            return
        }
        for module in KernelLibrary.modules {
            let ptx = String(decoding: try nvrtc.compile(name: "\(module.name).cu", source: String(decoding: module.source, as: UTF8.self),
                                                         headers: ["common.cuh": KernelLibrary.header],
                                                         options: KernelLibrary.options(architecture: "compute_90a"), ptx: true),
                                 as: UTF8.self)
            // Each ".entry name(" starts an entry; its body runs to the next entry.
            let entries = ptx.components(separatedBy: ".entry ").dropFirst()
            #expect(entries.count == module.functions.count, "\(module.name): \(entries.count) entries")
            for body in entries {
                let name = String(body.prefix { $0 != "(" && !$0.isWhitespace })
                let parts = body.components(separatedBy: "griddepcontrol.wait")
                #expect(parts.count > 1, "\(module.name): \(name) never waits for the previous grid")
                // Instructions before the wait, without predicates ("@%p1 ld.global…").
                let early = parts[0].split(separator: "\n").map { line -> String in
                    var text = line.trimmingCharacters(in: .whitespaces)
                    if text.hasPrefix("@") { text = String(text.drop { !$0.isWhitespace }).trimmingCharacters(in: .whitespaces) }
                    return text
                }
                let touching = early.filter { i in
                    ["st.", "atom.", "red.", "ld.global", "ld.shared", "cp.", "ldmatrix", "prefetch"].contains { i.hasPrefix($0) }
                        && !(["loom_gemv", "loom_lora_shrink", "loom_lora_expand_mma", "loom_rope_write_kv", "loom_norm_lora", "loom_silu_mul_lora"]
                                .contains { name.hasPrefix($0) } && i.hasPrefix("ld.global.nc"))
                        && !(name == "loom_silu_mul_lora" && ["st.shared", "ld.shared", "atom.shared"].contains { i.hasPrefix($0) })
                        && !(name.hasPrefix("loom_attention_decode_mma")
                             && ["ld.global", "ld.shared", "st.shared", "cp.async"].contains { i.hasPrefix($0) })
                }
                #expect(touching.isEmpty, "\(module.name): \(name) touches memory before grid_wait: \(touching.prefix(3))")
            }
        }
    }

    @Test func compileErrorsCarryTheLog() throws {
        guard let nvrtc = try? NVRTC() else { return }
        #expect {
            _ = try nvrtc.compile(name: "broken.cu", source: "extern \"C\" __global__ void f() { undefined_symbol; }", headers: [:],
                                  options: ["--gpu-architecture=sm_90a"])
        } throws: { error in
            guard case CUDAError.compilation(let kernel, _, _, let log) = error else { return false }
            return kernel == "broken.cu" && log.contains("undefined_symbol")
        }
    }

    @Test func cacheKeyDependsOnEveryPart() {
        let base = KernelLibrary.hash(["source", "header", "options", "sm_90a"])
        #expect(base != KernelLibrary.hash(["source", "header", "options", "sm_80"]))
        #expect(base != KernelLibrary.hash(["source2", "header", "options", "sm_90a"]))
        #expect(base == KernelLibrary.hash(["source", "header", "options", "sm_90a"]))
    }
}

#if canImport(Glibc)
import Glibc
#endif

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

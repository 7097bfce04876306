import Dispatch
import Foundation

/// The kernel sources embedded in the binary, compiled with NVRTC for the device's compute
/// capability on first use and cached on disk under `~/.cache/loom/kernels` (or `$LOOM_KERNEL_CACHE`),
/// keyed by a hash of the source, the shared header, the options and the capability.
/// `$LOOM_KERNEL_SOURCES` names a folder whose `<module>.cu` (and `common.cuh`) replace the embedded
/// ones, so that a kernel variant runs on a GPU machine without rebuilding the binary (A/B runs);
/// the kernels' report names each file taken from there.
final class KernelLibrary {
    /// One `.cu` file: its name and the kernel functions it defines.
    struct Module {
        var name: String
        var source: [UInt8]
        var functions: [String]
    }

    static let header = String(decoding: PackageResources.common_cuh, as: UTF8.self)
    static let modules: [Module] = [
        Module(name: "embed", source: PackageResources.embed_cu, functions: ["loom_embed"]),
        Module(name: "rms_norm", source: PackageResources.rms_norm_cu, functions: ["loom_norm", "loom_norm_lora"]),
        Module(name: "rope", source: PackageResources.rope_cu, functions: ["loom_rope_write_kv"]),
        Module(name: "attention", source: PackageResources.attention_cu, functions: [1, 2, 4, 8].flatMap { d in [1, 2, 4, 8].map { "loom_attention_d\(d)_g\($0)" } } + ["loom_attention_combine"]),
        Module(name: "attention_decode", source: PackageResources.attention_decode_cu,
               functions: [2, 4].flatMap { d in [4, 8].map { "loom_attention_decode_d\(d)_g\($0)" } }),
        Module(name: "attention_decode_mma", source: PackageResources.attention_decode_mma_cu,
               functions: ["", "_paged"].flatMap { p in [64, 128].flatMap { d in [4, 8].map { "loom_attention_decode_mma\(p)_d\(d)_g\($0)" } } }),
        Module(name: "silu_mul", source: PackageResources.silu_mul_cu, functions: ["loom_silu_mul", "loom_silu_mul_v8", "loom_silu_mul_lora"]),
        Module(name: "gather_rows", source: PackageResources.gather_rows_cu, functions: ["loom_gather_rows"]),
        Module(name: "gemv", source: PackageResources.gemv_cu, functions: (1...4).map { "loom_gemv_n\($0)" }),
        Module(name: "convert", source: PackageResources.convert_cu, functions: ["loom_convert"]),
        Module(name: "add_bias", source: PackageResources.add_bias_cu, functions: ["loom_add_bias"]),
        Module(name: "argmax", source: PackageResources.argmax_cu, functions: ["loom_argmax"]),
        Module(name: "fill", source: PackageResources.fill_cu, functions: ["loom_fill_random", "loom_fill_value"]),
        Module(name: "lora_shrink", source: PackageResources.lora_shrink_cu, functions: ["loom_lora_shrink", "loom_lora_shrink_mma_small", "loom_lora_shrink_mma_large", "loom_lora_shrink_fused", "loom_lora_shrink_fused_deep", "loom_lora_shrink_fused_large", "loom_lora_shrink_fused_mask", "loom_lora_shrink_fused_split", "loom_lora_shrink_fused_deep_split", "loom_lora_shrink_fused_large_split", "loom_lora_shrink_segments", "loom_lora_shrink_segments8"]),
        Module(name: "lora_expand", source: PackageResources.lora_expand_cu, functions: ["loom_lora_expand", "loom_lora_expand_mma_small", "loom_lora_expand_mma_large", "loom_lora_expand_stream", "loom_lora_expand_segments"]),
    ]

    private(set) var functions: [String: OpaquePointer] = [:]
    /// Per module: "cache" (read from disk) or the seconds NVRTC took.
    private(set) var report: [String: String] = [:]
    /// Per kernel function: its registers a thread, and its local memory (spills, stack) where any,
    /// as the loaded module says (`cuFuncGetAttribute`). Session 18's regression was a kernel whose
    /// registers fell from 118 to 68, seen only with ptxas by hand.
    private(set) var registers: [String: String] = [:]

    /// Compiles (in parallel) or reads from the cache every module, then loads them into the current context.
    init(driver: Driver, nvrtc: NVRTC, major: Int, minor: Int) throws {
        let compiled = try Self.compileAll(nvrtc: nvrtc, major: major, minor: minor)
        let carveouts = try Self.carveouts(ProcessInfo.processInfo.environment["LOOM_CARVEOUT"] ?? "")
        for (module, cubin, note) in compiled {
            var handle: OpaquePointer?
            try cubin.withUnsafeBytes { bytes in
                try driver.check(driver.cuModuleLoadData(&handle, bytes.baseAddress!), "cuModuleLoadData(\(module.name))")
            }
            for name in module.functions {
                var function: OpaquePointer?
                let status = driver.cuModuleGetFunction(&function, handle, name)
                guard status == 0, let function else { throw CUDAError.missingKernel(module: module.name, function: name) }
                functions[name] = function
                if let percent = carveouts[name] ?? carveouts["*"] {
                    try driver.check(driver.cuFuncSetAttribute(function, CUAttribute.funcPreferredSharedMemoryCarveout, percent),
                                     "cuFuncSetAttribute(\(name), carveout \(percent))")
                }
                if let get = driver.cuFuncGetAttribute {
                    var count: Int32 = 0, local: Int32 = 0
                    if get(&count, CUAttribute.funcNumRegisters, function) == 0 {
                        let spills = get(&local, CUAttribute.funcLocalSizeBytes, function) == 0 && local > 0 ? ", \(local) B local" : ""
                        registers[name] = "\(count)\(spills)"
                    }
                }
            }
            report[module.name] = note
        }
    }

    /// Preferred shared-memory carveouts (per cent of the unified L1) by function, from
    /// `LOOM_CARVEOUT` ("loom_rope_write_kv=100,*=-1"; `*` names every other function; -1 is the
    /// driver's choice), for experiments: a multiprocessor takes blocks of a kernel whose carveout
    /// differs from the running one's only once it drains. Giving RoPE the decode attention's (100)
    /// did not let the attention start sooner on the H200 (session 25).
    static func carveouts(_ setting: String) throws -> [String: Int32] {
        var result: [String: Int32] = [:]
        for item in setting.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty, let percent = Int32(parts[1]), (-1...100).contains(percent) else {
                throw CUDAError.badSetting(name: "LOOM_CARVEOUT", value: setting, expected: "function=percent pairs, percent -1...100, comma-separated")
            }
            result[parts[0]] = percent
        }
        return result
    }

    /// The target NVRTC compiles for: `sm_90a` on Hopper (wgmma and friends), else `sm_XY`.
    static func architecture(major: Int, minor: Int) -> String {
        "sm_\(major)\(minor)\(major == 9 && minor == 0 ? "a" : "")"
    }

    /// NVRTC's options for `architecture` (`sm_XY`, or `compute_XY` for PTX).
    static func options(architecture: String) -> [String] {
        var options = ["--gpu-architecture=\(architecture)", "--std=c++17", "-default-device", "-lineinfo"]
        if FileManager.default.fileExists(atPath: "/usr/local/cuda/include") { options.append("-I/usr/local/cuda/include") }
        return options
    }

    /// Every module's cubin with a note ("cache" or the compile time); needs NVRTC but no GPU.
    static func compileAll(nvrtc: NVRTC, major: Int, minor: Int) throws -> [(Module, [UInt8], String)] {
        let arch = architecture(major: major, minor: minor)
        let options = Self.options(architecture: arch)
        let cacheDirectory = Self.cacheDirectory()
        try? FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
        let overrides = Self.sourceOverrides()
        let header = overrides["common.cuh"].map { String(decoding: $0, as: UTF8.self) } ?? Self.header
        let modules = Self.modules
        var cubins = [[UInt8]?](repeating: nil, count: modules.count)
        var errors = [Error?](repeating: nil, count: modules.count)
        var notes = [String](repeating: "", count: modules.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: modules.count) { i in
            let module = modules[i]
            let replaced = overrides["\(module.name).cu"]
            let source = String(decoding: replaced ?? module.source, as: UTF8.self)
            let origin = replaced != nil || overrides["common.cuh"] != nil ? "from $LOOM_KERNEL_SOURCES, " : ""
            let key = Self.hash([source, header, options.joined(separator: " "), arch, nvrtc.version])
            let path = "\(cacheDirectory)/\(module.name)-\(arch)-\(key).cubin"
            if let data = FileManager.default.contents(atPath: path), !data.isEmpty {
                lock.withLock { cubins[i] = [UInt8](data); notes[i] = origin + "cache" }
                return
            }
            let start = DispatchTime.now()
            do {
                let cubin = try nvrtc.compile(name: "\(module.name).cu", source: source, headers: ["common.cuh": header], options: options)
                // Write to a temporary name, then rename, so a concurrent reader never sees half a file.
                let temporary = path + ".\(getpid()).\(i).tmp"
                if FileManager.default.createFile(atPath: temporary, contents: Data(cubin)) {
                    _ = rename(temporary, path)
                }
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
                lock.withLock { cubins[i] = cubin; notes[i] = origin + String(format: "compiled in %.2f s", seconds) }
            } catch {
                lock.withLock { errors[i] = error }
            }
        }
        if let error = errors.compactMap({ $0 }).first { throw error }
        return modules.indices.map { (modules[$0], cubins[$0]!, notes[$0]) }
    }

    /// The files of `directory` (`$LOOM_KERNEL_SOURCES`) that replace embedded sources, by file name.
    static func sourceOverrides(in directory: String? = ProcessInfo.processInfo.environment["LOOM_KERNEL_SOURCES"]) -> [String: [UInt8]] {
        guard let dir = directory, !dir.isEmpty else { return [:] }
        var files: [String: [UInt8]] = [:]
        for name in modules.map({ "\($0.name).cu" }) + ["common.cuh"] {
            if let data = FileManager.default.contents(atPath: "\(dir)/\(name)") { files[name] = [UInt8](data) }
        }
        return files
    }

    static func cacheDirectory() -> String {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["LOOM_KERNEL_CACHE"], !dir.isEmpty { return dir }
        let home = env["HOME"] ?? NSTemporaryDirectory()
        return "\(home)/.cache/loom/kernels"
    }

    /// Two FNV-1a 64-bit hashes with different offsets, as 32 hex digits.
    static func hash(_ parts: [String]) -> String {
        var h1: UInt64 = 0xcbf2_9ce4_8422_2325, h2: UInt64 = 0x8422_2325_cbf2_9ce4
        for part in parts {
            for byte in part.utf8 {
                h1 = (h1 ^ UInt64(byte)) &* 0x100_0000_01b3
                h2 = (h2 ^ UInt64(byte)) &* 0x100_0000_01b3 &+ 1
            }
            h1 = (h1 ^ 0xff) &* 0x100_0000_01b3
            h2 = (h2 ^ 0xfe) &* 0x100_0000_01b3
        }
        return String(format: "%016llx%016llx", h1, h2)
    }
}

#if canImport(Glibc)
import Glibc
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A shared library opened with `dlopen`, so the package builds and runs on machines without CUDA.
final class DynamicLibrary: @unchecked Sendable {
    let name: String
    private let handle: UnsafeMutableRawPointer

    /// Opens the first of `candidates` that loads; an environment variable `override` may name a path to try first.
    init(_ name: String, candidates: [String], override: String? = nil) throws {
        var tried: [String] = []
        var lastError = "not found"
        var list = candidates
        if let override, let path = ProcessInfo.processInfo.environment[override], !path.isEmpty {
            list.insert(path, at: 0)
        }
        for candidate in list {
            tried.append(candidate)
            if let h = dlopen(candidate, RTLD_NOW | RTLD_GLOBAL) {
                self.name = candidate
                handle = h
                return
            }
            if let e = dlerror() { lastError = String(cString: e) }
        }
        throw CUDAError.libraryNotFound(library: name, tried: tried, reason: lastError)
    }

    /// The symbol `symbol` as a C function pointer of type `T`.
    func function<T>(_ symbol: String, as type: T.Type = T.self) throws -> T {
        guard let pointer = dlsym(handle, symbol) else {
            throw CUDAError.symbolNotFound(library: name, symbol: symbol)
        }
        return unsafeBitCast(pointer, to: T.self)
    }

    /// The first of `symbols` the library exports (versioned names first, e.g. `cuMemAlloc_v2`).
    func function<T>(anyOf symbols: [String], as type: T.Type = T.self) throws -> T {
        for s in symbols {
            if let pointer = dlsym(handle, s) { return unsafeBitCast(pointer, to: T.self) }
        }
        throw CUDAError.symbolNotFound(library: name, symbol: symbols.joined(separator: " | "))
    }

    /// Library search list: plain sonames first, then the usual toolkit folders.
    static func candidates(_ stem: String, versions: [String]) -> [String] {
        var names = versions.map { "\(stem).so.\($0)" } + ["\(stem).so"]
        let folders = ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu",
                       "/usr/local/nvidia/lib64", "/usr/local/cuda-13.0/lib64", "/usr/local/cuda-12/lib64"]
        for folder in folders {
            for v in versions { names.append("\(folder)/\(stem).so.\(v)") }
        }
        return names
    }
}

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What `/load_lora_adapter` accepts: adapter names that cannot be mistaken for paths or for the
/// `model:adapter` syntax, and (with `--lora-allowed-dirs`) only folders inside the allowed ones.
extension ServerState {
    /// The longest adapter name accepted.
    static let maxAdapterNameLength = 256

    /// Why `name` cannot name an adapter, or nil when it can.
    static func adapterNameProblem(_ name: String) -> String? {
        if name.isEmpty { return "lora_name must not be empty." }
        if name.utf8.count > maxAdapterNameLength { return "lora_name is longer than \(maxAdapterNameLength) bytes." }
        if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return "lora_name must not contain control characters."
        }
        if name.contains("/") || name.contains("\\") || name == "." || name == ".." {
            return "lora_name '\(name)' looks like a path; give the path as lora_path and a plain name as lora_name."
        }
        if name.contains(":") {
            return "lora_name '\(name)' contains ':', which is reserved for the 'model:adapter' syntax."
        }
        return nil
    }

    /// The path to load `path` from: as given when loading is open; with `--lora-allowed-dirs`,
    /// the path with every symlink resolved, refused unless it lies inside an allowed folder
    /// (also resolved). Loading the resolved path means a symlink swapped after the check
    /// cannot redirect the load.
    func allowedAdapterPath(_ path: String) throws -> String {
        guard let allowed = configuration.loraAllowedDirs else { return path }
        let refusal = "lora_path '\(path)' does not exist or is outside the folders allowed by --lora-allowed-dirs."
        guard !path.isEmpty, let resolved = Self.realPath(path) else { throw AdapterPathRefused(message: refusal) }
        let inside = allowed.compactMap(Self.realPath).contains { dir in
            resolved == dir || resolved.hasPrefix(dir.hasSuffix("/") ? dir : dir + "/")
        }
        guard inside else { throw AdapterPathRefused(message: refusal) }
        return resolved
    }

    /// `realpath(3)`: absolute, with every symlink and `..` resolved; nil when it does not exist.
    static func realPath(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }
}

/// A load refused by `--lora-allowed-dirs`.
struct AdapterPathRefused: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

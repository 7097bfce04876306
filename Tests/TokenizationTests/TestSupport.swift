import Foundation
import Tokenization

/// Locates the package root: walks up from this file until a directory holding
/// `Fixtures/stories260k` is found (works through symlinked checkouts too); `LOOM_ROOT` overrides.
enum TestSupport {
    static let root: URL = {
        if let env = ProcessInfo.processInfo.environment["LOOM_ROOT"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        let fm = FileManager.default
        for start in [URL(fileURLWithPath: #filePath), URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()] {
            var dir = start.deletingLastPathComponent()
            while dir.path != "/" {
                if fm.fileExists(atPath: dir.appendingPathComponent("Fixtures/stories260k").path) { return dir }
                dir = dir.deletingLastPathComponent()
            }
        }
        fatalError("Cannot find the package root (a directory with Fixtures/stories260k) from \(#filePath); set LOOM_ROOT")
    }()

    static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    static let vectorNames = [
        "stories260k", "stories260k-legacy", "mistral", "gpt2-bytelevel", "llama3-bytelevel", "qwen2-bytelevel",
    ]

    struct Case: Decodable {
        let text: String
        let ids_with_special: [Int]
        let ids: [Int]
        let decoded: String
        let decoded_with_special: String
    }

    struct DecodeCase: Decodable {
        let ids: [Int]
        let skip_special_tokens: Bool
        let decoded: String
    }

    struct Vectors: Decodable {
        let tokenizer: String
        let tokenizer_dir: String
        let cases: [Case]
        let decode_cases: [DecodeCase]
    }

    static func vectors(_ name: String) throws -> Vectors {
        let data = try Data(contentsOf: url("Fixtures/tokenizers/vectors/\(name).json"))
        return try JSONDecoder().decode(Vectors.self, from: data)
    }

    private static let cache = TokenizerCache()

    /// Tokenizers are immutable and Sendable, so tests share one instance per directory.
    static func tokenizer(_ dir: String) throws -> Tokenizer {
        try cache.get(dir) { try Tokenizer(directory: url(dir)) }
    }
}

final class TokenizerCache: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String: Tokenizer] = [:]

    func get(_ key: String, make: () throws -> Tokenizer) rethrows -> Tokenizer {
        lock.lock()
        defer { lock.unlock() }
        if let t = items[key] { return t }
        let t = try make()
        items[key] = t
        return t
    }
}

/// Exact (scalar by scalar) string equality: Swift's `==` treats canonically equivalent strings as
/// equal, which would hide normalization bugs.
func same(_ a: String, _ b: String) -> Bool { Array(a.utf8) == Array(b.utf8) }

func escaped(_ s: String) -> String {
    s.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? String($0) : "\\u{\(String($0.value, radix: 16))}" }.joined()
}

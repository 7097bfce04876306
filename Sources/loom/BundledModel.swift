import Foundation
import LoomCore
import LoRA

/// The small model that ships with Loom (stories260K) and the bundled tokenizers, found next to
/// the binary's source tree or through `LOOM_HOME`.
enum BundledModel {
    /// The demo adapters trained on stories260K by `scripts/make_demo_adapters.py`.
    static func demoAdapters() throws -> [LoRAPathSpec] {
        let root = (try directory() as NSString).deletingLastPathComponent
        return ["pirate", "dragon"].map { LoRAPathSpec(name: $0, path: "\(root)/demo-adapters/\($0)") }
    }

    static func directory() throws -> String {
        guard let dir = fixture("stories260k", marker: "config.json") else {
            throw LoomError.invalidArgument("no --model-path given and the bundled model (Fixtures/stories260k) was not found; run from the Loom checkout or set LOOM_HOME")
        }
        return dir
    }

    /// The Mistral v1 tokenizer (32000 ids, BOS 1, EOS 2) that `--random-weights` serves with.
    static func mistralTokenizer() throws -> String {
        guard let dir = fixture("tokenizer-mistral-v1", marker: "tokenizer.json") else {
            throw LoomError.invalidArgument("the bundled tokenizer (Fixtures/tokenizer-mistral-v1) was not found; run from the Loom checkout, set LOOM_HOME or give --tokenizer-path")
        }
        return dir
    }

    /// `Fixtures/<name>` under the first root that has `marker` in it: `LOOM_HOME`, the current
    /// folder, then the package root when run from a build folder of a checkout.
    static func fixture(_ name: String, marker: String) -> String? {
        var candidates: [String] = []
        if let home = ProcessInfo.processInfo.environment["LOOM_HOME"] { candidates.append(home) }
        candidates.append(FileManager.default.currentDirectoryPath)
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path)
        for root in candidates {
            let dir = (root as NSString).appendingPathComponent("Fixtures/\(name)")
            if FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent(marker)) { return dir }
        }
        return nil
    }
}

import Foundation
import LoomCore
import LoRA

/// The small model that ships with Loom (stories260K), found next to the binary's source tree or
/// through `LOOM_HOME`.
enum BundledModel {
    /// The demo adapters trained on stories260K by `scripts/make_demo_adapters.py`.
    static func demoAdapters() throws -> [LoRAPathSpec] {
        let root = (try directory() as NSString).deletingLastPathComponent
        return ["pirate", "dragon"].map { LoRAPathSpec(name: $0, path: "\(root)/demo-adapters/\($0)") }
    }

    static func directory() throws -> String {
        var candidates: [String] = []
        if let home = ProcessInfo.processInfo.environment["LOOM_HOME"] { candidates.append(home) }
        candidates.append(FileManager.default.currentDirectoryPath)
        // The package root, when run from a build folder of a checkout.
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path)
        for root in candidates {
            let dir = (root as NSString).appendingPathComponent("Fixtures/stories260k")
            if FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent("config.json")) { return dir }
        }
        throw LoomError.invalidArgument("no --model-path given and the bundled model (Fixtures/stories260k) was not found; run from the Loom checkout or set LOOM_HOME")
    }
}

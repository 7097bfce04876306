import Foundation
import LoomCore
import ModelFormats
import Testing

/// Reading PEFT adapters, and every refusal with its message.
@Suite struct PEFTAdapterTests {
    let base = try! ModelConfig.load(directory: fixture("models/llama-tiny"))
    let source = "models/llama-tiny/adapters"

    func withAdapter(_ name: String, edit: (URL) throws -> Void) throws -> (URL, () -> Void) {
        let copy = try copyOfFixture("\(source)/\(name)", edit: edit)
        return (copy, { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) })
    }

    func refusal(_ name: String = "r4-qv", edit: (URL) throws -> Void) throws -> String {
        let (dir, cleanup) = try withAdapter(name, edit: edit)
        defer { cleanup() }
        do {
            _ = try PEFTAdapter.load(path: dir.path, base: base)
            return "loaded"
        } catch {
            return "\(error)"
        }
    }

    @Test func resolvesRanksAndScalingsFromPatterns() throws {
        let a = try PEFTAdapter.load(path: fixture("\(source)/r64-pattern"), base: base)
        let layer = a.layers[0]
        #expect(layer[.q]?.rank == 8 && layer[.q]?.scaling == 8)        // alpha 64 / r 8
        #expect(layer[.down]?.rank == 16 && layer[.down]?.scaling == 4)
        #expect(layer[.v]?.rank == 64 && layer[.v]?.scaling == 0.5)     // alpha_pattern 32 / 64
        #expect(layer[.k]?.scaling == 1)
        #expect(a.maxRank == 64 && a.targetModules.count == 7)
        let rs = try PEFTAdapter.load(path: fixture("\(source)/r32-attn-rslora"), base: base)
        #expect(abs(rs.layers[1][.o]!.scaling - 32 / Float(32).squareRoot()) < 1e-6)
        let partial = try PEFTAdapter.load(path: fixture("\(source)/r8-layers"), base: base)
        #expect(partial.layers[1].isEmpty && !partial.layers[0].isEmpty && !partial.layers[2].isEmpty)
    }

    @Test func refusesDoRA() throws {
        let message = try refusal { try editJSON($0.appendingPathComponent("adapter_config.json")) { $0["use_dora"] = true } }
        #expect(message.hasSuffix("adapter_config.json: DoRA adapters (use_dora) are not supported"))
    }

    @Test func refusesBias() throws {
        let message = try refusal { try editJSON($0.appendingPathComponent("adapter_config.json")) { $0["bias"] = "all" } }
        #expect(message.hasSuffix("bias \"all\" is not supported (bias must be \"none\")"))
    }

    @Test func refusesOtherPEFTTypes() throws {
        let message = try refusal { try editJSON($0.appendingPathComponent("adapter_config.json")) { $0["peft_type"] = "IA3" } }
        #expect(message.hasSuffix("peft_type IA3 is not supported (LORA only)"))
    }

    @Test func refusesAdaptersThatAddTokens() throws {
        var message = try refusal { try editJSON($0.appendingPathComponent("adapter_config.json")) { $0["modules_to_save"] = ["embed_tokens", "lm_head"] } }
        #expect(message.contains("modules_to_save [\"embed_tokens\", \"lm_head\"] is not supported"))
        message = try refusal { try editJSON($0.appendingPathComponent("adapter_config.json")) { $0["trainable_token_indices"] = [5, 6] } }
        #expect(message.contains("adapters that add tokens (trainable_token_indices) are not supported"))
        message = try refusal {
            try writeSafetensors($0.appendingPathComponent("adapter_model.safetensors"),
                                 [("base_model.model.model.embed_tokens.lora_embedding_A", "F32", [4, 512], Array(repeating: 0, count: 4 * 512 * 4))])
        }
        #expect(message.contains("adapters that add tokens or train embed_tokens / lm_head are not supported"))
    }

    @Test func refusesShapesThatDisagreeWithTheBase() throws {
        let other = try ModelConfig.load(directory: fixture("models/mistral-tiny"))
        #expect {
            try PEFTAdapter.load(path: fixture("\(source)/r4-qv"), base: other)
        } throws: { "\($0)".contains("q_proj.lora_B.weight' has shape [192, 4], expected [128, 4]") }
    }

    @Test func refusesMissingAndCorruptFiles() throws {
        var message = try refusal { try FileManager.default.removeItem(at: $0.appendingPathComponent("adapter_config.json")) }
        #expect(message.hasPrefix("file not found: ") && message.hasSuffix("adapter_config.json"))
        message = try refusal { try FileManager.default.removeItem(at: $0.appendingPathComponent("adapter_model.safetensors")) }
        #expect(message.hasSuffix("adapter_model.safetensors"))
        message = try refusal {
            try FileManager.default.removeItem(at: $0.appendingPathComponent("adapter_model.safetensors"))
            try Data([0]).write(to: $0.appendingPathComponent("adapter_model.bin"))
        }
        #expect(message.contains(".bin adapters are not supported"))
        message = try refusal {
            let url = $0.appendingPathComponent("adapter_model.safetensors")
            let data = try Data(contentsOf: url)
            try data.prefix(data.count / 2).write(to: url)
        }
        #expect(message.contains("adapter_model.safetensors") && message.contains("truncated"))
        message = try refusal { try Data("{oops".utf8).write(to: $0.appendingPathComponent("adapter_config.json")) }
        #expect(message.hasSuffix("adapter_config.json: not a JSON object"))
        #expect {
            try PEFTAdapter.load(path: fixture("\(source)/r4-qv/adapter_config.json"), base: base)
        } throws: { "\($0)".contains("is a file; an adapter is a folder") }
        #expect(throws: LoomError.fileNotFound(path: "/nonexistent/adapter")) {
            try PEFTAdapter.load(path: "/nonexistent/adapter", base: base)
        }
    }

    @Test func refusesARankThatDisagreesWithTheConfig() throws {
        let message = try refusal { try editJSON($0.appendingPathComponent("adapter_config.json")) { $0["r"] = 8 } }
        #expect(message.contains("has rank 4 but adapter_config.json gives"))
    }

    @Test func refusesUnsupportedTargetModules() throws {
        let message = try refusal {
            try writeSafetensors($0.appendingPathComponent("adapter_model.safetensors"),
                                 [("base_model.model.model.layers.0.self_attn.rotary.lora_A.weight", "F32", [1, 1], [0, 0, 0, 0])])
        }
        #expect(message.contains("targets a module that is not supported"))
    }
}

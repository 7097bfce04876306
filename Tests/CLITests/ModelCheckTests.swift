import CPUBackend
import Foundation
import Testing
@testable import loom

/// `loom gpu-check`'s model check run on the CPU backend against the fp32 PEFT fixture, so the
/// checker itself is checked without a GPU: the mixed-adapter batch must agree to f32 rounding.
@Suite struct ModelCheckTests {
    @Test func mixedAdaptersOnTheCPUMatchPEFT() throws {
        let result = ModelCheck.run(directory: fixture("models/llama-tiny"), backend: CPUBackend())
        #expect(result["error"] == nil, "\(result["error"] ?? "")")
        #expect(result["pass"] as? Bool == true, "\(result["summary"] ?? "")")
        let lora = try #require(result["lora"] as? [[String: Any]])
        #expect(lora.map { $0["lora_backend"] as? String } == ["csgmv", "sgmv", "fused"])
        for kind in lora {
            #expect(kind["first_step_sequences"] as? Int == 19, "all 18 adapter cases and a base case in one step")
            #expect(kind["slots"] as? Int == 7)
            let diff = try #require(kind["prefill_top5_logprob_max_abs_diff"] as? Float)
            #expect(diff < 1e-4, "\(kind["lora_backend"] ?? ""): \(diff)")
            #expect(kind["greedy_exact_cases"] as? String == "19/19")
            #expect((kind["per_adapter"] as? [[String: Any]])?.count == 7)
        }
    }

    @Test func aWrongAdapterReferenceFailsTheModel() throws {
        let copy = try copyOfFixture("models/llama-tiny") { dir in
            try editJSON(dir.appendingPathComponent("reference.json")) { json in
                var cases = json["cases"] as! [[String: Any]]
                let i = cases.firstIndex { $0["adapter"] as? String == "r8-layers" }!
                var logits = floats(cases[i]["last_logits"])
                logits[logits.indices.max { logits[$0] < logits[$1] }!] += 1
                cases[i]["last_logits"] = logits
                json["cases"] = cases
            }
        }
        defer { try? FileManager.default.removeItem(at: copy.deletingLastPathComponent()) }
        let result = ModelCheck.run(directory: copy.path, backend: CPUBackend())
        #expect(result["pass"] as? Bool == false)
        #expect(result["greedy_exact_cases"] as? String == "3/3", "the base check is untouched")
        for kind in try #require(result["lora"] as? [[String: Any]]) {
            #expect(kind["pass"] as? Bool == false)
            #expect(kind["worst_adapter"] as? String == "r8-layers")
        }
    }
}

import CPUBackend
import Foundation
import LoomCore
import Models
import Testing

/// The tiny Llama (bf16, head_dim ≠ hidden/heads, llama3 RoPE scaling), Mistral (f16, sharded) and
/// Qwen2 (f32, q/k/v bias, tied) fixtures against transformers fp32: last-position logits within
/// 1e-4 and 32 greedy tokens identical, every prompt of each model run together in one batch; also
/// with o and down cut into 2 K-slices that the following RMSNorm sums (a device's decode path).
@Suite struct FamilyGoldenTests {
    @Test(arguments: ["llama-tiny", "mistral-tiny", "qwen2-tiny"], [1, 2])
    func baseModelMatchesTransformers(_ name: String, slices: Int) throws {
        let reference = try loadJSON(fixture("models/\(name)/reference.json"))
        let cases = (reference["cases"] as! [[String: Any]]).filter { $0["adapter"] is NSNull || $0["adapter"] == nil }
        #expect(cases.count == 3)
        let backend = CPUBackend()
        backend.residualSlices = slices
        let model = try LlamaModel(directory: fixture("models/\(name)"), backend: backend, maxTokens: 256, maxSequences: 8)
        var first = [[Float]](repeating: [], count: cases.count)
        let outputs = try Generator(model: model).generate(
            cases.map { GenerationRequest(promptIds: ints($0["prompt_ids"]), maxNewTokens: 32) },
            onLogits: { s, step, logits in if step == 0 { first[s] = logits } })
        for (i, c) in cases.enumerated() {
            let diff = maxAbsDifference(first[i], floats(c["last_logits"]))
            #expect(diff < 1e-4, "\(name) prompt \(i): logits differ by \(diff)")
            #expect(outputs[i] == ints(c["greedy_ids"]), "\(name) prompt \(i)")
        }
    }
}

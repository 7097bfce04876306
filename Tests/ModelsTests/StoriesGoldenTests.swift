import CPUBackend
import Foundation
import LoomCore
import Models
import Testing

/// stories260K against the greedy reference that transformers recorded (`reference_greedy.json`).
@Suite struct StoriesGoldenTests {
    @Test func logitsAndGreedyTokensMatchTransformers() throws {
        let reference = try loadJSON(fixture("stories260k/reference_greedy.json"))
        let cases = reference["cases"] as! [[String: Any]]
        #expect(!cases.isEmpty)
        let model = try LlamaModel(directory: fixture("stories260k"), backend: CPUBackend(), maxTokens: 256, maxSequences: 8)
        let generator = Generator(model: model)
        for c in cases {
            let prompt = ints(c["prompt_ids"])
            let expected = ints(c["greedy_new_ids"])
            let expectedLogits = floats(c["last_position_logits"])
            var firstLogits: [Float] = []
            let output = try generator.generate(
                [GenerationRequest(promptIds: prompt, maxNewTokens: expected.count)],
                onLogits: { _, step, logits in if step == 0 { firstLogits = logits } })[0]
            // The reference rounds logits to 5 decimals.
            #expect(maxAbsDifference(firstLogits, expectedLogits) < 1e-4, "prompt \(prompt)")
            #expect(output == expected, "prompt \(prompt)")
        }
    }

    @Test func mixedBatchEqualsSingleRuns() throws {
        let reference = try loadJSON(fixture("stories260k/reference_greedy.json"))
        let cases = reference["cases"] as! [[String: Any]]
        let model = try LlamaModel(directory: fixture("stories260k"), backend: CPUBackend(), maxTokens: 256, maxSequences: 8)
        let requests = cases.map { GenerationRequest(promptIds: ints($0["prompt_ids"]), maxNewTokens: 32) }
        let together = try Generator(model: model).generate(requests)
        for (c, output) in zip(cases, together) {
            #expect(output == Array(ints(c["greedy_new_ids"]).prefix(32)))
        }
    }
}

import LoomCore
import Models
import Testing

@Suite struct WeightPrefetchTests {
    @Test func defaultsToOffAndReadsGroupsAndSize() throws {
        let standard = try WeightPrefetch.from(environment: [:])
        #expect(standard.groups.isEmpty && standard.maxBytes == 32 << 20)
        let all = try WeightPrefetch.from(environment: ["LOOM_L2_PREFETCH": "o+gate_up, down,qkv", "LOOM_L2_PREFETCH_MB": "16"])
        #expect(all.groups == [.o, .gateUp, .down, .qkv] && all.maxBytes == 16 << 20)
        #expect(try WeightPrefetch.from(environment: ["LOOM_L2_PREFETCH": "off"]).groups.isEmpty)
    }

    @Test func rejectsUnknownGroupsAndSizes() {
        #expect(throws: LoomError.self) { try WeightPrefetch.from(environment: ["LOOM_L2_PREFETCH": "o,lm"]) }
        #expect(throws: LoomError.self) { try WeightPrefetch.from(environment: ["LOOM_L2_PREFETCH_MB": "-1"]) }
        #expect(throws: LoomError.self) { try WeightPrefetch.from(environment: ["LOOM_L2_PREFETCH_MB": "lots"]) }
    }
}

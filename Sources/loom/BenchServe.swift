import ArgumentParser
import Foundation
import ServeBench

/// `loom bench serve`: the serving benchmark, against Loom or any SGLang- or OpenAI-compatible
/// server, with `python -m sglang.bench_serving`'s flag names where it has them.
struct BenchServe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Measure a running server: throughput, TTFT, TPOT, ITL and end-to-end latency.",
        discussion: """
        Sends --num-prompts streaming requests at --request-rate (Poisson; --arrival gamma --cv for \
        burstier traffic) with random token ids of the given lengths, spread over adapters (--lora-name \
        or --num-adapters) by --lora-request-distribution. --request-rate-sweep runs several rates and \
        stops after the first whose SLO attainment is below --slo-attainment. The table goes to \
        standard output; --output-file appends JSON lines, --output-json writes one document, --plot an SVG.
        """)

    @OptionGroup var options: BenchServeOptions

    func run() throws {
        let options = options
        _ = try BenchServeMain.blocking { try await BenchServeMain.run(options) }
    }
}

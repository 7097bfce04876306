// swift-tools-version:6.0
import PackageDescription

/// Kernels are compiled with full optimisation even in debug builds, so `swift test` runs the
/// golden-model tests at a usable speed.
let kernelFlags: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"])]

let package = Package(
    name: "Loom",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "loom", targets: ["loom"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        .target(name: "LoomCore"),
        .target(name: "ModelFormats", dependencies: ["LoomCore"]),
        .target(name: "Tokenization", dependencies: ["LoomCore"], swiftSettings: kernelFlags),
        .target(name: "CPUBackend", dependencies: ["LoomCore"], swiftSettings: kernelFlags),
        .target(name: "Models", dependencies: ["LoomCore", "ModelFormats"]),
        .target(name: "LoRA", dependencies: ["LoomCore", "ModelFormats", "Models"]),
        .target(
            name: "CUDABackend", dependencies: ["LoomCore"],
            resources: [
                .embedInCode("Kernels/common.cuh"),
                .embedInCode("Kernels/embed.cu"),
                .embedInCode("Kernels/rms_norm.cu"),
                .embedInCode("Kernels/rope.cu"),
                .embedInCode("Kernels/attention.cu"),
                .embedInCode("Kernels/attention_decode.cu"),
                .embedInCode("Kernels/attention_decode_mma.cu"),
                .embedInCode("Kernels/silu_mul.cu"),
                .embedInCode("Kernels/gather_rows.cu"),
                .embedInCode("Kernels/convert.cu"),
                .embedInCode("Kernels/gemv.cu"),
                .embedInCode("Kernels/add_bias.cu"),
                .embedInCode("Kernels/argmax.cu"),
                .embedInCode("Kernels/fill.cu"),
                .embedInCode("Kernels/lora_shrink.cu"),
                .embedInCode("Kernels/lora_expand.cu"),
            ]
        ),
        .target(name: "Engine", dependencies: ["LoomCore", "ModelFormats", "Models", "LoRA", "Tokenization"]),
        .target(
            name: "Server",
            dependencies: [
                "Engine", "LoRA", "Tokenization", "LoomCore", "ModelFormats",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The serving benchmark (`loom bench serve`, `loom bench make-adapters`). Optimised even in
        // debug builds: it fills adapter weights and times streams while the server shares the CPU.
        .target(
            name: "ServeBench",
            dependencies: [
                "LoomCore", "ModelFormats", "Tokenization",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: kernelFlags
        ),
        .executableTarget(
            name: "loom",
            dependencies: [
                "LoomCore", "ModelFormats", "Tokenization", "Models", "LoRA", "CPUBackend", "CUDABackend",
                "Server", "ServeBench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(name: "LoomTestSupport", path: "Tests/LoomTestSupport"),
        .testTarget(name: "LoomCoreTests", dependencies: ["LoomCore"]),
        .testTarget(name: "ModelFormatsTests", dependencies: ["LoomTestSupport", "ModelFormats"]),
        .testTarget(name: "TokenizationTests", dependencies: ["Tokenization"]),
        .testTarget(name: "CPUBackendTests", dependencies: ["CPUBackend"]),
        .testTarget(name: "ModelsTests", dependencies: ["LoomTestSupport", "Models", "CPUBackend", "ModelFormats", "Tokenization"]),
        .testTarget(
            name: "ServerTests",
            dependencies: [
                "LoomTestSupport", "Server", "Engine", "LoRA", "Tokenization", "LoomCore", "ModelFormats", "CPUBackend",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["ChatTemplates"]
        ),
        .testTarget(name: "EngineTests", dependencies: ["LoomTestSupport", "Engine", "CPUBackend", "Models", "LoRA", "Tokenization"]),
        .testTarget(name: "CLITests", dependencies: ["LoomTestSupport", "loom"]),
        .testTarget(name: "ServeBenchTests", dependencies: ["LoomTestSupport", "ServeBench", "ModelFormats", "LoomCore", "loom"]),
        .testTarget(name: "CUDABackendTests", dependencies: ["CUDABackend", "LoomCore", "LoRA"]),
        .testTarget(name: "LoRATests", dependencies: ["LoomTestSupport", "LoRA", "Models", "CPUBackend", "ModelFormats"]),
    ],
    swiftLanguageModes: [.v5]
)

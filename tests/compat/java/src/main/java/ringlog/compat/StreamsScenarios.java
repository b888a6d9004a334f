package ringlog.compat;

import static ringlog.compat.Ctx.map;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

/** Kafka Streams: the word count, with a repartition topic and a changelogged state store. */
final class StreamsScenarios {
    private StreamsScenarios() {}

    static final String[] WORDS = {"log", "ring", "kafka", "trio", "batch", "offset", "segment", "stream"};

    /**
     * Lines of words go in (keys that do not match the words, so grouping by word must go through
     * the repartition topic); counts per word come out; the state store is backed by a compacted
     * changelog topic; at_least_once. The lines are reported so the Python side counts for itself.
     */
    static Map<String, Object> wordCount(Ctx ctx) throws Exception {
        return wordCount(ctx, StreamsConfig.AT_LEAST_ONCE);
    }

    /**
     * The same topology under exactly_once_v2: Streams' producers are transactional (one
     * transactional id per stream thread, offsets sent in the transaction), its consumers read
     * read_committed. The output is read read_committed too, and every count update of each word
     * is reported, so the Python side checks that each appears exactly once (1, 2, ..., n).
     */
    static Map<String, Object> wordCountExactlyOnce(Ctx ctx) throws Exception {
        return wordCount(ctx, StreamsConfig.EXACTLY_ONCE_V2);
    }

    static Map<String, Object> wordCount(Ctx ctx, String guarantee) throws Exception {
        boolean eos = guarantee.equals(StreamsConfig.EXACTLY_ONCE_V2);
        String app = ctx.name("app");
        String input = ctx.name("lines");
        String output = ctx.name("counts");
        ctx.createTopic(input, 2);
        ctx.createTopic(output, 2);
        List<Object> lines = new ArrayList<>();
        Map<String, Long> expected = new HashMap<>();
        Properties pp = ctx.producerProps(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName(),
                ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            for (int i = 0; i < 200; i++) {
                StringBuilder line = new StringBuilder();
                for (int w = 0; w <= i % 5; w++) {
                    String word = WORDS[(i * 7 + w * 3) % WORDS.length];
                    // mixed case and punctuation: the topology lower-cases and splits on non-words
                    line.append(w == 0 ? word.toUpperCase(Locale.ROOT) : word).append(w % 2 == 0 ? ", " : " ");
                    expected.merge(word, 1L, Long::sum);
                }
                lines.add(line.toString());
                p.send(new ProducerRecord<>(input, "line-" + i, line.toString()));
            }
            p.flush();
        }

        // the tests pass a directory of their own (-Dringlog.tmp), removed after the run
        String tmp = System.getProperty("ringlog.tmp");
        Path stateDir = tmp == null ? Files.createTempDirectory("ringlog-streams-")
                : Files.createTempDirectory(Path.of(tmp), "streams-");
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, app);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, ctx.bootstrap);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        // no record cache: every count update reaches the output and the changelog
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        // purge the repartition topic (DeleteRecords) soon after each commit
        props.put(StreamsConfig.REPARTITION_PURGE_INTERVAL_MS_CONFIG, 200);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 300);

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(v -> Arrays.stream(v.toLowerCase(Locale.ROOT).split("\\W+")).filter(w -> !w.isEmpty()).toList())
                .groupBy((k, word) -> word, Grouped.with("words", Serdes.String(), Serdes.String()))
                .count(Materialized.as("counts"))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));

        String changelog = app + "-counts-changelog";
        String repartition = app + "-words-repartition";
        Map<String, Object> result = map("application_id", app, "input", input, "output_topic", output, "lines", lines,
                "changelog_topic", changelog, "repartition_topic", repartition);
        List<Object> states = new ArrayList<>();
        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setStateListener((now, before) -> states.add(now.name()));
        streams.setUncaughtExceptionHandler(e -> {
            result.put("uncaught", Main.stackTrace(e));
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        try {
            streams.start();
            result.put("reached_running", Ctx.waitFor(() -> streams.state() == KafkaStreams.State.RUNNING, 60_000));
            result.put("output", latestCounts(ctx, output, expected, 60_000, eos));
            result.put("changelog", latestCounts(ctx, changelog, expected, 30_000, eos));
            try (Admin admin = ctx.admin()) {
                TreeSet<String> topics = new TreeSet<>(admin.listTopics().names().get(20, TimeUnit.SECONDS));
                List<Object> internal = new ArrayList<>();
                for (String t : topics) if (t.startsWith(app)) internal.add(t);
                result.put("internal_topics", internal);
                result.put("changelog_configs", AdminScenarios.configMap(admin.describeConfigs(
                        List.of(new ConfigResource(ConfigResource.Type.TOPIC, changelog))).all().get(20, TimeUnit.SECONDS)
                        .get(new ConfigResource(ConfigResource.Type.TOPIC, changelog))));
                result.put("repartition_configs", AdminScenarios.configMap(admin.describeConfigs(
                        List.of(new ConfigResource(ConfigResource.Type.TOPIC, repartition))).all().get(20, TimeUnit.SECONDS)
                        .get(new ConfigResource(ConfigResource.Type.TOPIC, repartition))));
                // once consumed and committed, repartition records are deleted (DeleteRecords)
                result.put("repartition_purged", Ctx.waitFor(() -> earliest(admin, repartition) > 0, 30_000));
                result.put("repartition_earliest", earliest(admin, repartition));
                Map<String, Object> committed = new LinkedHashMap<>();
                admin.listConsumerGroupOffsets(app).partitionsToOffsetAndMetadata().get(20, TimeUnit.SECONDS)
                        .forEach((tp, om) -> committed.put(tp.topic() + ":" + tp.partition(), om == null ? null : om.offset()));
                result.put("group_offsets", committed);
            }
        } finally {
            streams.close(Duration.ofSeconds(20));
            streams.cleanUp();
        }
        result.put("states", states);
        return result;
    }

    /** Sum of the earliest offsets of the topic's partitions. */
    static long earliest(Admin admin, String topic) {
        try {
            Map<TopicPartition, OffsetSpec> q = new HashMap<>();
            int partitions = admin.describeTopics(List.of(topic)).allTopicNames().get(20, TimeUnit.SECONDS).get(topic).partitions().size();
            for (int p = 0; p < partitions; p++) q.put(new TopicPartition(topic, p), OffsetSpec.earliest());
            long sum = 0;
            for (ListOffsetsResult.ListOffsetsResultInfo info : admin.listOffsets(q).all().get(20, TimeUnit.SECONDS).values()) sum += info.offset();
            return sum;
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    /**
     * The last count per word in `topic`, read until it equals `expected` or the time runs out
     * (the Python side compares with its own count of the lines).
     */
    static Map<String, Object> latestCounts(Ctx ctx, String topic, Map<String, Long> expected, long timeoutMs,
                                            boolean readCommitted) {
        Properties cp = ctx.consumerProps(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName(),
                ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class.getName(),
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, readCommitted ? "read_committed" : "read_uncommitted");
        Map<String, Long> latest = new LinkedHashMap<>();
        Map<String, Object> updates = new LinkedHashMap<>();
        int records = 0;
        try (KafkaConsumer<String, Long> c = new KafkaConsumer<>(cp)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (var info : c.partitionsFor(topic, Duration.ofSeconds(20))) tps.add(new TopicPartition(topic, info.partition()));
            c.assign(tps);
            c.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + timeoutMs;
            while (!latest.equals(expected) && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, Long> r : c.poll(Duration.ofMillis(200))) {
                    latest.put(r.key(), r.value());
                    @SuppressWarnings("unchecked")
                    List<Object> seen = (List<Object>) updates.computeIfAbsent(r.key(), k -> new ArrayList<>());
                    seen.add(r.value());
                    records++;
                }
            }
        }
        return map("counts", new LinkedHashMap<String, Object>(latest), "records", records, "updates", updates);
    }
}

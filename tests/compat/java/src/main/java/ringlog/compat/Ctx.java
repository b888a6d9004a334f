package ringlog.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/** What every scenario needs: client configs for the broker under test, names, test records. */
final class Ctx {
    final String bootstrap;
    final String scenario;

    Ctx(String bootstrap, String scenario) {
        this.bootstrap = bootstrap;
        this.scenario = scenario;
    }

    /** A topic or group name of this scenario's own, so scenarios never share state. */
    String name(String suffix) {
        return "java-" + scenario.replace('_', '-') + "-" + suffix;
    }

    Properties producerProps(Object... kv) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.CLIENT_ID_CONFIG, name("producer"));
        put(p, kv);
        return p;
    }

    Properties consumerProps(Object... kv) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        // the broker's group.min.session.timeout.ms is 6000; short heartbeats make rebalances quick
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "300");
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, name("consumer"));
        put(p, kv);
        return p;
    }

    Properties adminProps(Object... kv) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, name("admin"));
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "20000");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        put(p, kv);
        return p;
    }

    private static void put(Properties p, Object... kv) {
        for (int i = 0; i < kv.length; i += 2) {
            p.put(String.valueOf(kv[i]), String.valueOf(kv[i + 1]));
        }
    }

    KafkaProducer<byte[], byte[]> producer(Object... kv) {
        return new KafkaProducer<>(producerProps(kv));
    }

    KafkaConsumer<byte[], byte[]> consumer(Object... kv) {
        return new KafkaConsumer<>(consumerProps(kv));
    }

    Admin admin(Object... kv) {
        return Admin.create(adminProps(kv));
    }

    void createTopic(String topic, int partitions, Map<String, String> configs) throws Exception {
        try (Admin admin = admin()) {
            admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1).configs(configs)))
                    .all().get(20, TimeUnit.SECONDS);
        }
    }

    void createTopic(String topic, int partitions) throws Exception {
        createTopic(topic, partitions, Map.of());
    }

    // --- test records -----------------------------------------------------------------------

    /**
     * Record number i of a deterministic set that covers what a broker must keep byte for byte:
     * null and empty keys and values, every byte value, repeated and null-valued headers, and
     * some large compressible values (so compressed batches hold many records).
     */
    static ProducerRecord<byte[], byte[]> testRecord(String topic, Integer partition, int i) {
        byte[] key = switch (i % 5) {
            case 3 -> null;
            case 4 -> new byte[0];
            default -> ("key-" + (i % 11)).getBytes(StandardCharsets.UTF_8);
        };
        byte[] value;
        if (i % 10 == 9) {
            value = null;
        } else if (i % 10 == 8) {
            value = new byte[0];
        } else {
            int n = (i % 25 == 0) ? 20_000 : (i * 37) % 300;
            value = new byte[n + 8];
            byte[] prefix = String.format("v%07d", i).getBytes(StandardCharsets.US_ASCII);
            System.arraycopy(prefix, 0, value, 0, 8);
            for (int j = 0; j < n; j++) value[8 + j] = (byte) ((i + j) % 256);
        }
        List<Header> headers = new ArrayList<>();
        if (i % 3 == 1) {
            headers.add(new RecordHeader("trace", new byte[] {0, 1, (byte) 0x7f, (byte) 0x80, (byte) 0xff}));
            headers.add(new RecordHeader("empty", new byte[0]));
        } else if (i % 3 == 2) {
            headers.add(new RecordHeader("dup", "a".getBytes(StandardCharsets.UTF_8)));
            headers.add(new RecordHeader("dup", "b".getBytes(StandardCharsets.UTF_8)));
            headers.add(new RecordHeader("null-header", null));
        }
        return new ProducerRecord<>(topic, partition, null, key, value, headers);
    }

    /** A sent record and where it went, as the Python side compares it. */
    static Map<String, Object> sent(ProducerRecord<byte[], byte[]> r, RecordMetadata md) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("p", md.partition());
        m.put("o", md.hasOffset() ? md.offset() : -1L);
        m.put("ts", md.hasTimestamp() ? md.timestamp() : -1L);
        m.put("k", r.key());
        m.put("v", r.value());
        m.put("h", headers(r.headers()));
        return m;
    }

    static Map<String, Object> read(ConsumerRecord<byte[], byte[]> r) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("p", r.partition());
        m.put("o", r.offset());
        m.put("ts", r.timestamp());
        m.put("k", r.key());
        m.put("v", r.value());
        m.put("h", headers(r.headers()));
        return m;
    }

    private static List<Object> headers(Iterable<Header> headers) {
        List<Object> out = new ArrayList<>();
        for (Header h : headers) {
            List<Object> pair = new ArrayList<>();
            pair.add(h.key());
            pair.add(h.value());
            out.add(pair);
        }
        return out;
    }

    /** Poll until `count` records arrived (or the deadline passed); returns them in order. */
    static List<ConsumerRecord<byte[], byte[]>> pollRecords(KafkaConsumer<byte[], byte[]> c, int count, long timeoutMs) {
        List<ConsumerRecord<byte[], byte[]>> out = new ArrayList<>();
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (out.size() < count && System.currentTimeMillis() < deadline) {
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) out.add(r);
        }
        return out;
    }

    /** Wait for a condition with a bound; false when the time ran out. */
    static boolean waitFor(BooleanSupplier condition, long timeoutMs) throws InterruptedException {
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (!condition.getAsBoolean()) {
            if (System.currentTimeMillis() >= deadline) return false;
            Thread.sleep(20);
        }
        return true;
    }

    static List<Object> partitions(java.util.Collection<TopicPartition> tps) {
        List<Object> out = new ArrayList<>();
        tps.stream().sorted(java.util.Comparator.comparing(TopicPartition::topic).thenComparingInt(TopicPartition::partition))
                .forEach(tp -> out.add(tp.topic() + ":" + tp.partition()));
        return out;
    }

    static Map<String, Object> map(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) m.put(String.valueOf(kv[i]), kv[i + 1]);
        return m;
    }
}

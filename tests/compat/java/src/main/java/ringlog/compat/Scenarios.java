package ringlog.compat;

import java.util.LinkedHashMap;
import java.util.Map;

/** The scenario registry: name -> code. The Python tests name the scenarios to run. */
final class Scenarios {
    private Scenarios() {}

    static final Map<String, Main.Scenario> ALL = new LinkedHashMap<>();

    static {
        ALL.put("produce_acks", ProducerScenarios::acks);
        ALL.put("produce_codecs", ProducerScenarios::codecs);
        ALL.put("produce_idempotent", ProducerScenarios::idempotent);
        ALL.put("produce_partitioners", ProducerScenarios::partitioners);
        ALL.put("consume_assign", ConsumerScenarios::assign);
        ALL.put("consume_group_commit", ConsumerScenarios::groupCommit);
        ALL.put("group_range", GroupScenarios::range);
        ALL.put("group_cooperative_sticky", GroupScenarios::cooperativeSticky);
        ALL.put("group_static_membership", GroupScenarios::staticMembership);
        ALL.put("group_consumer_protocol", ConsumerProtocolScenarios::rebalance);
        ALL.put("group_consumer_protocol_range", ConsumerProtocolScenarios::range);
        ALL.put("admin_topics", AdminScenarios::topics);
        ALL.put("admin_configs", AdminScenarios::configs);
        ALL.put("admin_offsets_delete_records", AdminScenarios::offsetsAndDeleteRecords);
        ALL.put("admin_cluster", AdminScenarios::cluster);
        ALL.put("admin_client_quotas", AdminScenarios::clientQuotas);
        ALL.put("admin_groups", AdminScenarios::groups);
        ALL.put("admin_log_dirs_producers", AdminScenarios::logDirsAndProducers);
        ALL.put("streams_word_count", StreamsScenarios::wordCount);
        ALL.put("streams_word_count_exactly_once", StreamsScenarios::wordCountExactlyOnce);
    }
}

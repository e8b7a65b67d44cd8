// What a resource's name must be for everything made from it to work: the names of the objects the operator
// makes for it (a prefix and the resource's name, see src/operator/render.ts) must fit a DNS label, and the name
// becomes part of JetStream stream names and subjects, where "." separates tokens.
import type { Rule } from './rules.ts';

/** Prefix of the objects (Deployment, Service, ConfigMap, Ingress) made for each kind: `<prefix><name>`. */
export const ownedNamePrefix = {
  ProviderEndpoint: 'hookyard-receiver-',
  WebhookSubscription: 'hookyard-dispatcher-',
} as const;

/**
 * Kubernetes' limit for a DNS label: a Service's name must be one, and a Deployment's should be (its pods'
 * host names are cut there).
 */
const dnsLabelLength = 63;

/** The longest name of a resource of this kind: its objects' names are at most a DNS label. */
export const maxNameLength = (kind: keyof typeof ownedNamePrefix) => dnsLabelLength - ownedNamePrefix[kind].length;

/** The rules on metadata.name, for the CRD (a root rule, which may read metadata.name) and the zod schema alike. */
export function nameRules(kind: keyof typeof ownedNamePrefix): Rule[] {
  const max = maxNameLength(kind);
  return [
    {
      rule: "!self.metadata.name.contains('.')",
      message:
        'metadata.name may not contain ".": the name becomes part of JetStream stream names and subjects, where "." separates tokens; use "-" instead, such as shop-orders for shop.orders',
      fieldPath: '.metadata.name',
    },
    {
      rule: `size(self.metadata.name) <= ${max}`,
      message: `metadata.name may be at most ${max} characters: the ${kind}'s objects are named ${ownedNamePrefix[kind]}<name>, which Kubernetes limits to ${dnsLabelLength}; choose a shorter name`,
      fieldPath: '.metadata.name',
    },
  ];
}

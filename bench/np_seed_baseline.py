"""A faithful Python copy of the seed plan's calculateNormalizedPower (TypeScript): counts 30
*samples*, drops missing values, pure-Python sliding window. The speed baseline only."""


def seed_normalized_power(power_values, window_size=30):
    values = [p for p in power_values if p is not None]
    if len(values) < window_size:
        return None
    window_sum = 0.0
    count = 0
    sum_of_fourth_powers = 0.0
    for i in range(window_size):
        window_sum += values[i]
    for i in range(window_size, len(values) + 1):
        window_avg = window_sum / window_size
        sum_of_fourth_powers += window_avg**4
        count += 1
        if i < len(values):
            window_sum = window_sum - values[i - window_size] + values[i]
    if count == 0:
        return None
    return (sum_of_fourth_powers / count) ** 0.25

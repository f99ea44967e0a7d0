"""Class names and prompt templates of the paper's eight datasets, in label order.

The prompts are task arithmetic's (Ilharco et al.), so zero-shot heads match the
numbers that line of work reports. Each list is in the label order orthoxfer's
loaders produce; the loaders map on-disk class keys (folder names, metadata names)
through ``FOLDERS`` to these indices, so a tree holding only some classes still gets
the labels the full head expects. Templates are ``str.format`` patterns with one ``{}``.
"""

from __future__ import annotations


def _lines(text: str) -> list[str]:
    return text.strip().splitlines()


def _words(text: str) -> list[str]:
    return text.split()


# Stanford Cars: the names in the devkit's cars_meta.mat, in its order (label = class - 1).
_CARS = _lines(
    """
AM General Hummer SUV 2000
Acura RL Sedan 2012
Acura TL Sedan 2012
Acura TL Type-S 2008
Acura TSX Sedan 2012
Acura Integra Type R 2001
Acura ZDX Hatchback 2012
Aston Martin V8 Vantage Convertible 2012
Aston Martin V8 Vantage Coupe 2012
Aston Martin Virage Convertible 2012
Aston Martin Virage Coupe 2012
Audi RS 4 Convertible 2008
Audi A5 Coupe 2012
Audi TTS Coupe 2012
Audi R8 Coupe 2012
Audi V8 Sedan 1994
Audi 100 Sedan 1994
Audi 100 Wagon 1994
Audi TT Hatchback 2011
Audi S6 Sedan 2011
Audi S5 Convertible 2012
Audi S5 Coupe 2012
Audi S4 Sedan 2012
Audi S4 Sedan 2007
Audi TT RS Coupe 2012
BMW ActiveHybrid 5 Sedan 2012
BMW 1 Series Convertible 2012
BMW 1 Series Coupe 2012
BMW 3 Series Sedan 2012
BMW 3 Series Wagon 2012
BMW 6 Series Convertible 2007
BMW X5 SUV 2007
BMW X6 SUV 2012
BMW M3 Coupe 2012
BMW M5 Sedan 2010
BMW M6 Convertible 2010
BMW X3 SUV 2012
BMW Z4 Convertible 2012
Bentley Continental Supersports Conv. Convertible 2012
Bentley Arnage Sedan 2009
Bentley Mulsanne Sedan 2011
Bentley Continental GT Coupe 2012
Bentley Continental GT Coupe 2007
Bentley Continental Flying Spur Sedan 2007
Bugatti Veyron 16.4 Convertible 2009
Bugatti Veyron 16.4 Coupe 2009
Buick Regal GS 2012
Buick Rainier SUV 2007
Buick Verano Sedan 2012
Buick Enclave SUV 2012
Cadillac CTS-V Sedan 2012
Cadillac SRX SUV 2012
Cadillac Escalade EXT Crew Cab 2007
Chevrolet Silverado 1500 Hybrid Crew Cab 2012
Chevrolet Corvette Convertible 2012
Chevrolet Corvette ZR1 2012
Chevrolet Corvette Ron Fellows Edition Z06 2007
Chevrolet Traverse SUV 2012
Chevrolet Camaro Convertible 2012
Chevrolet HHR SS 2010
Chevrolet Impala Sedan 2007
Chevrolet Tahoe Hybrid SUV 2012
Chevrolet Sonic Sedan 2012
Chevrolet Express Cargo Van 2007
Chevrolet Avalanche Crew Cab 2012
Chevrolet Cobalt SS 2010
Chevrolet Malibu Hybrid Sedan 2010
Chevrolet TrailBlazer SS 2009
Chevrolet Silverado 2500HD Regular Cab 2012
Chevrolet Silverado 1500 Classic Extended Cab 2007
Chevrolet Express Van 2007
Chevrolet Monte Carlo Coupe 2007
Chevrolet Malibu Sedan 2007
Chevrolet Silverado 1500 Extended Cab 2012
Chevrolet Silverado 1500 Regular Cab 2012
Chrysler Aspen SUV 2009
Chrysler Sebring Convertible 2010
Chrysler Town and Country Minivan 2012
Chrysler 300 SRT-8 2010
Chrysler Crossfire Convertible 2008
Chrysler PT Cruiser Convertible 2008
Daewoo Nubira Wagon 2002
Dodge Caliber Wagon 2012
Dodge Caliber Wagon 2007
Dodge Caravan Minivan 1997
Dodge Ram Pickup 3500 Crew Cab 2010
Dodge Ram Pickup 3500 Quad Cab 2009
Dodge Sprinter Cargo Van 2009
Dodge Journey SUV 2012
Dodge Dakota Crew Cab 2010
Dodge Dakota Club Cab 2007
Dodge Magnum Wagon 2008
Dodge Challenger SRT8 2011
Dodge Durango SUV 2012
Dodge Durango SUV 2007
Dodge Charger Sedan 2012
Dodge Charger SRT-8 2009
Eagle Talon Hatchback 1998
FIAT 500 Abarth 2012
FIAT 500 Convertible 2012
Ferrari FF Coupe 2012
Ferrari California Convertible 2012
Ferrari 458 Italia Convertible 2012
Ferrari 458 Italia Coupe 2012
Fisker Karma Sedan 2012
Ford F-450 Super Duty Crew Cab 2012
Ford Mustang Convertible 2007
Ford Freestar Minivan 2007
Ford Expedition EL SUV 2009
Ford Edge SUV 2012
Ford Ranger SuperCab 2011
Ford GT Coupe 2006
Ford F-150 Regular Cab 2012
Ford F-150 Regular Cab 2007
Ford Focus Sedan 2007
Ford E-Series Wagon Van 2012
Ford Fiesta Sedan 2012
GMC Terrain SUV 2012
GMC Savana Van 2012
GMC Yukon Hybrid SUV 2012
GMC Acadia SUV 2012
GMC Canyon Extended Cab 2012
Geo Metro Convertible 1993
HUMMER H3T Crew Cab 2010
HUMMER H2 SUT Crew Cab 2009
Honda Odyssey Minivan 2012
Honda Odyssey Minivan 2007
Honda Accord Coupe 2012
Honda Accord Sedan 2012
Hyundai Veloster Hatchback 2012
Hyundai Santa Fe SUV 2012
Hyundai Tucson SUV 2012
Hyundai Veracruz SUV 2012
Hyundai Sonata Hybrid Sedan 2012
Hyundai Elantra Sedan 2007
Hyundai Accent Sedan 2012
Hyundai Genesis Sedan 2012
Hyundai Sonata Sedan 2012
Hyundai Elantra Touring Hatchback 2012
Hyundai Azera Sedan 2012
Infiniti G Coupe IPL 2012
Infiniti QX56 SUV 2011
Isuzu Ascender SUV 2008
Jaguar XK XKR 2012
Jeep Patriot SUV 2012
Jeep Wrangler SUV 2012
Jeep Liberty SUV 2012
Jeep Grand Cherokee SUV 2012
Jeep Compass SUV 2012
Lamborghini Reventon Coupe 2008
Lamborghini Aventador Coupe 2012
Lamborghini Gallardo LP 570-4 Superleggera 2012
Lamborghini Diablo Coupe 2001
Land Rover Range Rover SUV 2012
Land Rover LR2 SUV 2012
Lincoln Town Car Sedan 2011
MINI Cooper Roadster Convertible 2012
Maybach Landaulet Convertible 2012
Mazda Tribute SUV 2011
McLaren MP4-12C Coupe 2012
Mercedes-Benz 300-Class Convertible 1993
Mercedes-Benz C-Class Sedan 2012
Mercedes-Benz SL-Class Coupe 2009
Mercedes-Benz E-Class Sedan 2012
Mercedes-Benz S-Class Sedan 2012
Mercedes-Benz Sprinter Van 2012
Mitsubishi Lancer Sedan 2012
Nissan Leaf Hatchback 2012
Nissan NV Passenger Van 2012
Nissan Juke Hatchback 2012
Nissan 240SX Coupe 1998
Plymouth Neon Coupe 1999
Porsche Panamera Sedan 2012
Ram C/V Cargo Van Minivan 2012
Rolls-Royce Phantom Drophead Coupe Convertible 2012
Rolls-Royce Ghost Sedan 2012
Rolls-Royce Phantom Sedan 2012
Scion xD Hatchback 2012
Spyker C8 Convertible 2009
Spyker C8 Coupe 2009
Suzuki Aerio Sedan 2007
Suzuki Kizashi Sedan 2012
Suzuki SX4 Hatchback 2012
Suzuki SX4 Sedan 2012
Tesla Model S Sedan 2012
Toyota Sequoia SUV 2012
Toyota Camry Sedan 2012
Toyota Corolla Sedan 2012
Toyota 4Runner SUV 2012
Volkswagen Golf Hatchback 2012
Volkswagen Golf Hatchback 1991
Volkswagen Beetle Hatchback 2012
Volvo C30 Hatchback 2012
Volvo 240 Sedan 1993
Volvo XC90 SUV 2007
smart fortwo Convertible 2012
"""
)

# DTD: the 47 texture folders, sorted (torchvision's label order).
_DTD = _words(
    """
banded blotchy braided bubbly bumpy chequered cobwebbed cracked crosshatched crystalline dotted
fibrous flecked freckled frilly gauzy grid grooved honeycombed interlaced knitted lacelike lined
marbled matted meshed paisley perforated pitted pleated polka-dotted porous potholed scaly smeared
spiralled sprinkled stained stratified striped studded swirly veined waffled woven wrinkled
zigzagged
"""
)

# EuroSAT RGB: folders under 2750/, sorted, and the prompt names CLIP and task arithmetic use.
_EUROSAT_FOLDERS = _words(
    """
AnnualCrop Forest HerbaceousVegetation Highway Industrial Pasture PermanentCrop Residential River SeaLake
"""
)
_EUROSAT = [
    "annual crop land",
    "forest",
    "brushland or shrubland",
    "highway or road",
    "industrial buildings or commercial buildings",
    "pasture land",
    "permanent crop land",
    "residential buildings or homes or apartments",
    "river",
    "lake or sea",
]

# GTSRB: class ids 0..42 (the folders 00000..00042), described as in CLIP's prompts.
_GTSRB = _lines(
    """
red and white circle 20 kph speed limit
red and white circle 30 kph speed limit
red and white circle 50 kph speed limit
red and white circle 60 kph speed limit
red and white circle 70 kph speed limit
red and white circle 80 kph speed limit
end / de-restriction of 80 kph speed limit
red and white circle 100 kph speed limit
red and white circle 120 kph speed limit
red and white circle red car and black car no passing
red and white circle red truck and black car no passing
red and white triangle road intersection warning
white and yellow diamond priority road
red and white upside down triangle yield right-of-way
stop
empty red and white circle
red and white circle no truck entry
red circle with white horizonal stripe no entry
red and white triangle with exclamation mark warning
red and white triangle with black left curve approaching warning
red and white triangle with black right curve approaching warning
red and white triangle with black double curve approaching warning
red and white triangle rough / bumpy road warning
red and white triangle car skidding / slipping warning
red and white triangle with merging / narrow lanes warning
red and white triangle with person digging / construction / road work warning
red and white triangle with traffic light approaching warning
red and white triangle with person walking warning
red and white triangle with child and person walking warning
red and white triangle with bicyle warning
red and white triangle with snowflake / ice warning
red and white triangle with deer warning
white circle with gray strike bar no speed limit
blue circle with white right turn arrow mandatory
blue circle with white left turn arrow mandatory
blue circle with white forward arrow mandatory
blue circle with white forward or right turn arrow mandatory
blue circle with white forward or left turn arrow mandatory
blue circle with white keep right arrow mandatory
blue circle with white keep left arrow mandatory
blue circle with white arrows indicating a traffic circle
white circle with gray strike bar indicating no passing for cars has ended
white circle with gray strike bar indicating no passing for trucks has ended
"""
)

# RESISC45: the 45 scene folders of NWPU-RESISC45, sorted.
_RESISC45_FOLDERS = _words(
    """
airplane airport baseball_diamond basketball_court beach bridge chaparral church circular_farmland
cloud commercial_area dense_residential desert forest freeway golf_course ground_track_field harbor
industrial_area intersection island lake meadow medium_residential mobile_home_park mountain
overpass palace parking_lot railway railway_station rectangular_farmland river roundabout runway
sea_ice ship snowberg sparse_residential stadium storage_tank tennis_court terrace
thermal_power_station wetland
"""
)

# SUN397: the class paths of ClassName.txt without the leading slash, in its (sorted) order.
_SUN397_FOLDERS = _words(
    """
a/abbey a/airplane_cabin a/airport_terminal a/alley a/amphitheater a/amusement_arcade
a/amusement_park a/anechoic_chamber a/apartment_building/outdoor a/apse/indoor a/aquarium a/aqueduct
a/arch a/archive a/arrival_gate/outdoor a/art_gallery a/art_school a/art_studio a/assembly_line
a/athletic_field/outdoor a/atrium/public a/attic a/auditorium a/auto_factory b/badlands
b/badminton_court/indoor b/baggage_claim b/bakery/shop b/balcony/exterior b/balcony/interior
b/ball_pit b/ballroom b/bamboo_forest b/banquet_hall b/bar b/barn b/barndoor b/baseball_field
b/basement b/basilica b/basketball_court/outdoor b/bathroom b/batters_box b/bayou b/bazaar/indoor
b/bazaar/outdoor b/beach b/beauty_salon b/bedroom b/berth b/biology_laboratory b/bistro/indoor
b/boardwalk b/boat_deck b/boathouse b/bookstore b/booth/indoor b/botanical_garden
b/bow_window/indoor b/bow_window/outdoor b/bowling_alley b/boxing_ring b/brewery/indoor b/bridge
b/building_facade b/bullring b/burial_chamber b/bus_interior b/butchers_shop b/butte c/cabin/outdoor
c/cafeteria c/campsite c/campus c/canal/natural c/canal/urban c/candy_store c/canyon
c/car_interior/backseat c/car_interior/frontseat c/carrousel c/casino/indoor c/castle c/catacomb
c/cathedral/indoor c/cathedral/outdoor c/cavern/indoor c/cemetery c/chalet c/cheese_factory
c/chemistry_lab c/chicken_coop/indoor c/chicken_coop/outdoor c/childs_room c/church/indoor
c/church/outdoor c/classroom c/clean_room c/cliff c/cloister/indoor c/closet c/clothing_store
c/coast c/cockpit c/coffee_shop c/computer_room c/conference_center c/conference_room
c/construction_site c/control_room c/control_tower/outdoor c/corn_field c/corral c/corridor
c/cottage_garden c/courthouse c/courtroom c/courtyard c/covered_bridge/exterior c/creek c/crevasse
c/crosswalk c/cubicle/office d/dam d/delicatessen d/dentists_office d/desert/sand
d/desert/vegetation d/diner/indoor d/diner/outdoor d/dinette/home d/dinette/vehicle d/dining_car
d/dining_room d/discotheque d/dock d/doorway/outdoor d/dorm_room d/driveway d/driving_range/outdoor
d/drugstore e/electrical_substation e/elevator/door e/elevator/interior e/elevator_shaft
e/engine_room e/escalator/indoor e/excavation f/factory/indoor f/fairway f/fastfood_restaurant
f/field/cultivated f/field/wild f/fire_escape f/fire_station f/firing_range/indoor f/fishpond
f/florist_shop/indoor f/food_court f/forest/broadleaf f/forest/needleleaf f/forest_path
f/forest_road f/formal_garden f/fountain g/galley g/game_room g/garage/indoor g/garbage_dump
g/gas_station g/gazebo/exterior g/general_store/indoor g/general_store/outdoor g/gift_shop
g/golf_course g/greenhouse/indoor g/greenhouse/outdoor g/gymnasium/indoor h/hangar/indoor
h/hangar/outdoor h/harbor h/hayfield h/heliport h/herb_garden h/highway h/hill h/home_office
h/hospital h/hospital_room h/hot_spring h/hot_tub/outdoor h/hotel/outdoor h/hotel_room h/house
h/hunting_lodge/outdoor i/ice_cream_parlor i/ice_floe i/ice_shelf i/ice_skating_rink/indoor
i/ice_skating_rink/outdoor i/iceberg i/igloo i/industrial_area i/inn/outdoor i/islet
j/jacuzzi/indoor j/jail/indoor j/jail_cell j/jewelry_shop k/kasbah k/kennel/indoor k/kennel/outdoor
k/kindergarden_classroom k/kitchen k/kitchenette l/labyrinth/outdoor l/lake/natural l/landfill
l/landing_deck l/laundromat l/lecture_room l/library/indoor l/library/outdoor l/lido_deck/outdoor
l/lift_bridge l/lighthouse l/limousine_interior l/living_room l/lobby l/lock_chamber l/locker_room
m/mansion m/manufactured_home m/market/indoor m/market/outdoor m/marsh m/martial_arts_gym
m/mausoleum m/medina m/moat/water m/monastery/outdoor m/mosque/indoor m/mosque/outdoor m/motel
m/mountain m/mountain_snowy m/movie_theater/indoor m/museum/indoor m/music_store m/music_studio
n/nuclear_power_plant/outdoor n/nursery o/oast_house o/observatory/outdoor o/ocean o/office
o/office_building o/oil_refinery/outdoor o/oilrig o/operating_room o/orchard o/outhouse/outdoor
p/pagoda p/palace p/pantry p/park p/parking_garage/indoor p/parking_garage/outdoor p/parking_lot
p/parlor p/pasture p/patio p/pavilion p/pharmacy p/phone_booth p/physics_laboratory p/picnic_area
p/pilothouse/indoor p/planetarium/outdoor p/playground p/playroom p/plaza p/podium/indoor
p/podium/outdoor p/pond p/poolroom/establishment p/poolroom/home p/power_plant/outdoor
p/promenade_deck p/pub/indoor p/pulpit p/putting_green r/racecourse r/raceway r/raft
r/railroad_track r/rainforest r/reception r/recreation_room r/residential_neighborhood r/restaurant
r/restaurant_kitchen r/restaurant_patio r/rice_paddy r/riding_arena r/river r/rock_arch
r/rope_bridge r/ruin r/runway s/sandbar s/sandbox s/sauna s/schoolhouse s/sea_cliff s/server_room
s/shed s/shoe_shop s/shopfront s/shopping_mall/indoor s/shower s/skatepark s/ski_lodge s/ski_resort
s/ski_slope s/sky s/skyscraper s/slum s/snowfield s/squash_court s/stable s/stadium/baseball
s/stadium/football s/stage/indoor s/staircase s/street s/subway_interior s/subway_station/platform
s/supermarket s/sushi_bar s/swamp s/swimming_pool/indoor s/swimming_pool/outdoor s/synagogue/indoor
s/synagogue/outdoor t/television_studio t/temple/east_asia t/temple/south_asia t/tennis_court/indoor
t/tennis_court/outdoor t/tent/outdoor t/theater/indoor_procenium t/theater/indoor_seats t/thriftshop
t/throne_room t/ticket_booth t/toll_plaza t/topiary_garden t/tower t/toyshop t/track/outdoor
t/train_railway t/train_station/platform t/tree_farm t/tree_house t/trench u/underwater/coral_reef
u/utility_room v/valley v/van_interior v/vegetable_garden v/veranda v/veterinarians_office v/viaduct
v/videostore v/village v/vineyard v/volcano v/volleyball_court/indoor v/volleyball_court/outdoor
w/waiting_room w/warehouse/indoor w/water_tower w/waterfall/block w/waterfall/fan w/waterfall/plunge
w/watering_hole w/wave w/wet_bar w/wheat_field w/wind_farm w/windmill w/wine_cellar/barrel_storage
w/wine_cellar/bottle_storage w/wrestling_ring/indoor y/yard y/youth_hostel
"""
)

_DIGITS = [str(d) for d in range(10)]

CLASSNAMES: dict[str, list[str]] = {
    "Cars": _CARS,
    "DTD": _DTD,
    "EuroSAT": _EUROSAT,
    "GTSRB": _GTSRB,
    "MNIST": _DIGITS,
    "RESISC45": [f.replace("_", " ") for f in _RESISC45_FOLDERS],
    # "a/apartment_building/outdoor" -> "apartment building outdoor", as task arithmetic names it
    "SUN397": [f[2:].replace("/", " ").replace("_", " ") for f in _SUN397_FOLDERS],
    "SVHN": _DIGITS,
}

# How each folder- or metadata-named dataset spells its classes on disk, in label order.
FOLDERS: dict[str, list[str]] = {
    "Cars": _CARS,
    "DTD": _DTD,
    "EuroSAT": _EUROSAT_FOLDERS,
    "RESISC45": _RESISC45_FOLDERS,
    "SUN397": _SUN397_FOLDERS,
}

TEMPLATES: dict[str, list[str]] = {
    "Cars": [
        "a photo of a {}.",
        "a photo of the {}.",
        "a photo of my {}.",
        "i love my {}!",
        "a photo of my dirty {}.",
        "a photo of my clean {}.",
        "a photo of my new {}.",
        "a photo of my old {}.",
    ],
    "DTD": [
        "a photo of a {} texture.",
        "a photo of a {} pattern.",
        "a photo of a {} thing.",
        "a photo of a {} object.",
        "a photo of the {} texture.",
        "a photo of the {} pattern.",
        "a photo of the {} thing.",
        "a photo of the {} object.",
    ],
    "EuroSAT": [
        "a centered satellite photo of {}.",
        "a centered satellite photo of a {}.",
        "a centered satellite photo of the {}.",
    ],
    "GTSRB": [
        'a zoomed in photo of a "{}" traffic sign.',
        'a centered photo of a "{}" traffic sign.',
        'a close up photo of a "{}" traffic sign.',
    ],
    "MNIST": ['a photo of the number: "{}".'],
    "RESISC45": [
        f"{kind} {view} of {article}{{}}."
        for article in ("", "a ", "the ")
        for kind, view in (
            ("satellite", "imagery"),
            ("aerial", "imagery"),
            ("satellite", "photo"),
            ("aerial", "photo"),
            ("satellite", "view"),
            ("aerial", "view"),
        )
    ],
    "SUN397": ["a photo of a {}.", "a photo of the {}."],
    "SVHN": ['a photo of the number: "{}".'],
}
